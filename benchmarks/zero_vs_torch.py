"""shardwise ZeRO stages 1-3 against PyTorch's DDP, ZeroRedundancyOptimizer and FSDP2, in one launch.

    python benchmarks/zero_vs_torch.py [--model mlp|gpt|both] [--steps 20] [--warmup 3] [--json PATH] [--tiny]

For each model (the cases of ddp_vs_torch.py: the 8.4M MLP with Adam, the built-in GPT with
AdamW and no decay on biases and norms), every rank builds seven copies of one initial model:

    torch_ddp    torch.nn.parallel.DistributedDataParallel + the plain optimizer (the baseline)
    torch_zero1  DistributedDataParallel + torch.distributed.optim.ZeroRedundancyOptimizer
    torch_fsdp2  torch.distributed.fsdp.fully_shard on each unit (each Linear of the MLP, each
                 transformer block of the GPT), then on the root, over a 1-D CPU DeviceMesh
    sw_ddp, sw_zero1, sw_zero2, sw_zero3   sw.wrap(..., strategy=...) with default knobs

Full training steps (forward, backward, optimizer.step, zero_grad) of all seven are interleaved
with a barrier before each (see [Note: interleaved timing] in _timing.py); a step lasts as long
as its slowest rank. Inside each step the forward, backward and step+zero_grad phases are timed
too (no barrier between them: communication started in backward and awaited in step counts in
step). After the timed steps every copy takes one more, identical step, and its model-state
bytes are taken right after `optimizer.step()`, before `zero_grad()`, when gradients exist
under every strategy (see `torch_model_state_bytes` for how PyTorch's are counted). Then the
full parameters of each copy are compared with PyTorch DDP's: all copies started equal and saw
the same batches, so they must agree up to floating-point reordering.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_BENCHMARKS_DIR = str(Path(__file__).resolve().parent)
if _BENCHMARKS_DIR not in sys.path:  # sibling modules, also when imported from elsewhere
    sys.path.insert(0, _BENCHMARKS_DIR)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.optim import ZeroRedundancyOptimizer  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import shardwise as sw  # noqa: E402
from _timing import PhaseClock, interleaved_timing, median, paired_ratios, slowest_rank, summarize  # noqa: E402
from ddp_vs_torch import DISTINCT_BATCHES, MODELS, ModelCase, model_case  # noqa: E402  (same cases)

VARIANTS = ("torch_ddp", "torch_zero1", "torch_fsdp2", "sw_ddp", "sw_zero1", "sw_zero2", "sw_zero3")
BASELINE = "torch_ddp"
SHARDWISE_STRATEGIES = {"sw_ddp": "ddp", "sw_zero1": "zero1", "sw_zero2": "zero2", "sw_zero3": "zero3"}
PHASES = ("forward", "backward", "step")  # "step": optimizer.step() + zero_grad()
TARGET_RATIOS = {"sw_zero1": 1.05, "sw_zero2": 1.10, "sw_zero3": 1.30}  # max step time / PyTorch DDP's (the issue)
PARAM_AGREEMENT_ATOL = 1e-5  # same start, same data, same averaging: only summation order differs
MB = 1e6


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    steps: int
    warmup: int
    tiny: bool
    seed: int = 0


# --- building the seven copies ---------------------------------------------------------------


def fsdp_units(case: ModelCase, module: nn.Module) -> list[nn.Module]:
    """What FSDP2 shards as one unit, the same split shardwise's stage 3 makes by default."""
    if case.name == "mlp":
        return [layer for layer in module.layers if isinstance(layer, nn.Linear)]
    return list(module.blocks)


def zero_redundancy_optimizer(plain: torch.optim.Optimizer) -> ZeroRedundancyOptimizer:
    """PyTorch's ZeRO-1 over the same parameter groups, class and hyperparameters as `plain`."""
    cls = type(plain)
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {key: value for key, value in plain.defaults.items() if key in accepted}
    groups = [
        {"params": group["params"], **{k: v for k, v in group.items() if k != "params" and v != plain.defaults.get(k)}}
        for group in plain.param_groups
    ]
    return ZeroRedundancyOptimizer(groups, optimizer_class=cls, **defaults)


def build_variant(name: str, initial: nn.Module, case: ModelCase, mesh):
    """(model, optimizer) of one configuration, from a deep copy of `initial`."""
    module = copy.deepcopy(initial)
    if name == "torch_ddp":
        return DistributedDataParallel(module), case.optimizer(module)
    if name == "torch_zero1":
        return DistributedDataParallel(module), zero_redundancy_optimizer(case.optimizer(module))
    if name == "torch_fsdp2":
        for unit in fsdp_units(case, module):
            fully_shard(unit, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module, case.optimizer(module)  # built after sharding: over the DTensor shards
    return sw.wrap(module, case.optimizer(module), strategy=SHARDWISE_STRATEGIES[name])


# --- what each copy holds --------------------------------------------------------------------


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def torch_model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """sw.model_state_bytes's count for a PyTorch-wrapped model: the storages of parameters,
    gradients and optimizer state tensors, each once; DTensors by their local shard.

    ZeroRedundancyOptimizer keeps its shard's state in its inner `.optim`. Not counted, as not
    reachable from parameters or optimizer: DDP's reducer buckets (another 4 bytes per
    parameter with the default gradient_as_bucket_view=False).
    """
    tensors = []
    for p in model.parameters():
        tensors.append(_local(p))
        if p.grad is not None:
            tensors.append(_local(p.grad))
    inner = getattr(optimizer, "optim", optimizer)
    for state in inner.state.values():
        tensors += [_local(value) for value in state.values() if torch.is_tensor(value)]
    storages: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.nbytes() > 0:
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(storages.values())


def model_state_bytes(name: str, model, optimizer) -> int:
    if name in SHARDWISE_STRATEGIES:
        return sw.model_state_bytes(model, optimizer)
    return torch_model_state_bytes(model, optimizer)


def full_state(name: str, model) -> dict[str, torch.Tensor]:
    """Full parameters and buffers by state_dict key (a collective for the sharded copies)."""
    if name in SHARDWISE_STRATEGIES:
        return sw.full_state_dict(model)
    if name == "torch_fsdp2":
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach() for k, v in model.state_dict().items()}
    return {k: v.detach() for k, v in model.module.state_dict().items()}


def max_abs_difference(state: dict, reference: dict) -> float:
    if set(state) != set(reference):
        raise RuntimeError(f"state_dict keys differ: {sorted(set(state) ^ set(reference))[:5]}")
    with torch.no_grad():
        return max((state[k].float() - reference[k].float()).abs().max().item() for k in reference)


def ideal_comm_bytes(name: str, params: int, world_size: int) -> float:
    """Ring wire bytes per rank per step, fp32 (ZeRO §7): DDP, stage 1, stage 2: 2(N-1)/N·4Ψ
    (all-reduce, or reduce-scatter + all-gather); stage 3: 3(N-1)/N·4Ψ (one more all-gather)."""
    factor = 3 if name == "sw_zero3" else 2
    return factor * (world_size - 1) / world_size * 4 * params


# --- one rank's run --------------------------------------------------------------------------


def _training_step(case: ModelCase, model, optimizer, batches, clock: PhaseClock, comm_log: list | None):
    """A closure doing one full step on the next batch of the cycle, timing its phases; for the
    shardwise copies it also logs the bytes that step moved (sw.comm_stats deltas)."""
    position = [0]

    def step() -> None:
        x, y = batches[position[0] % len(batches)]
        position[0] += 1
        before = sw.comm_stats() if comm_log is not None else None
        clock.start()
        loss = case.loss(model(x), y)
        clock.lap("forward")
        loss.backward()
        clock.lap("backward")
        optimizer.step()
        optimizer.zero_grad()
        clock.lap("step")
        if comm_log is not None:
            after = sw.comm_stats()
            comm_log.append({kind: after[kind] - before[kind] for kind in after})

    return step


def _measured_step(case: ModelCase, model, optimizer, batch, name: str) -> int:
    """One more step; the model-state bytes right after optimizer.step(), gradients still held."""
    x, y = batch
    case.loss(model(x), y).backward()
    optimizer.step()
    held = model_state_bytes(name, model, optimizer)
    optimizer.zero_grad()
    return held


def bench_model_on_rank(case: ModelCase, config: BenchConfig, mesh) -> dict:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(config.seed)
    initial = case.build()
    params = sum(p.numel() for p in initial.parameters())
    built = {name: build_variant(name, initial, case, mesh) for name in VARIANTS}

    batches = case.batches(initial, rank, DISTINCT_BATCHES, config.seed)
    clocks = {name: PhaseClock(PHASES) for name in VARIANTS}
    comm_logs = {name: [] for name in SHARDWISE_STRATEGIES}
    steps = {
        name: _training_step(case, model, optimizer, batches, clocks[name], comm_logs.get(name))
        for name, (model, optimizer) in built.items()
    }
    seconds = interleaved_timing(steps, repeats=config.steps, warmup=config.warmup, barrier=dist.barrier)
    phases = {name: clocks[name].last(config.steps) for name in VARIANTS}

    # One more identical step each, measured while gradients are held; then the parity check.
    extra_batch = batches[(config.warmup + config.steps) % len(batches)]
    held_bytes = {
        name: _measured_step(case, model, optimizer, extra_batch, name) for name, (model, optimizer) in built.items()
    }
    reference = full_state(BASELINE, built[BASELINE][0])
    differences = {name: max_abs_difference(full_state(name, built[name][0]), reference) for name in VARIANTS}

    everyone = [None] * world_size
    dist.all_gather_object(everyone, {"seconds": seconds, "phases": phases, "held_bytes": held_bytes,
                                      "comm": comm_logs, "differences": differences})
    if rank != 0:
        return {}
    step_seconds = {name: slowest_rank([r["seconds"][name] for r in everyone]) for name in VARIANTS}
    baseline_ms = summarize(step_seconds[BASELINE])["median_ms"]
    results = {}
    for name in VARIANTS:
        summary = summarize(step_seconds[name])
        phase_ms = {
            phase: median(slowest_rank([r["phases"][name][phase] for r in everyone])) * 1e3 for phase in PHASES
        }
        entry = {
            **summary,
            "ratio_to_torch_ddp": summary["median_ms"] / baseline_ms,
            "paired_ratio_median": median(paired_ratios(step_seconds[name], step_seconds[BASELINE])),
            "phase_median_ms": phase_ms,
            "model_state_bytes": [r["held_bytes"][name] for r in everyone],
            "max_abs_param_diff": max(r["differences"][name] for r in everyone),
        }
        entry["params_agree"] = entry["max_abs_param_diff"] <= PARAM_AGREEMENT_ATOL
        if name in SHARDWISE_STRATEGIES:
            timed = [r["comm"][name][config.warmup:] for r in everyone]  # per rank, per timed step
            entry["comm_bytes_per_step"] = [median([s["total"] for s in per_rank]) for per_rank in timed]
            kinds = [kind for kind, moved in timed[0][0].items() if kind != "total" and moved]
            entry["comm_bytes_per_step_by_kind"] = {kind: median([s[kind] for s in timed[0]]) for kind in kinds}
            entry["ideal_comm_bytes_per_step"] = ideal_comm_bytes(name, params, world_size)
        results[name] = entry
    return {
        "description": case.description,
        "params": params,
        "variants": results,
        "targets": check_targets(results),
    }


def check_targets(results: dict) -> list[dict]:
    """The issue's targets: ratios to PyTorch DDP, and stage 3 faster than FSDP2."""
    checks = [
        {"target": f"{name} <= {limit:.2f}x torch_ddp", "value": results[name]["ratio_to_torch_ddp"],
         "met": results[name]["ratio_to_torch_ddp"] <= limit}
        for name, limit in TARGET_RATIOS.items()
    ]
    zero3_over_fsdp2 = results["sw_zero3"]["median_ms"] / results["torch_fsdp2"]["median_ms"]
    checks.append({"target": "sw_zero3 faster than torch_fsdp2", "value": zero3_over_fsdp2, "met": zero3_over_fsdp2 < 1.0})
    return checks


def run_rank(config: BenchConfig) -> dict | None:
    """What each launched rank runs; rank 0 returns the results."""
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {name: bench_model_on_rank(model_case(name, config.tiny), config, mesh) for name in config.models}
    environment = {"threads_per_rank": torch.get_num_threads(), "world_size": dist.get_world_size()}
    return {"environment": environment, "configs": results} if dist.get_rank() == 0 else None


# --- report ----------------------------------------------------------------------------------


def markdown_table(result: dict) -> str:
    header = (
        "| config | step ms (IQR) | / torch_ddp | paired ratio | fwd / bwd / step ms "
        "| model-state MB/rank | comm MB/step (ideal) | max abs diff vs torch_ddp |"
    )
    lines = [header, "|" + "---|" * 8]
    for name, entry in result["variants"].items():
        phases = " / ".join(f"{entry['phase_median_ms'][phase]:.1f}" for phase in PHASES)
        held = ", ".join(f"{b / MB:.1f}" for b in sorted(set(entry["model_state_bytes"])))
        if "comm_bytes_per_step" in entry:
            comm_cell = f"{max(entry['comm_bytes_per_step']) / MB:.1f} ({entry['ideal_comm_bytes_per_step'] / MB:.1f})"
        else:
            comm_cell = "-"
        cells = [
            name,
            f"{entry['median_ms']:.1f} ({entry['iqr_ms']:.1f})",
            f"{entry['ratio_to_torch_ddp']:.3f}",
            f"{entry['paired_ratio_median']:.3f}",
            phases,
            held,
            comm_cell,
            f"{entry['max_abs_param_diff']:.2e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=(*MODELS, "both"), default="both")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 20, tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration first (default 3, tiny 1)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="very small models and few steps: a smoke test")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the numbers here")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.tiny else 20
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.steps < 1 or args.warmup < 0 or args.nproc < 1:
        parser.error("--steps and --nproc must be at least 1, --warmup at least 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    models = MODELS if args.model == "both" else (args.model,)
    config = BenchConfig(models=models, steps=args.steps, warmup=args.warmup, tiny=args.tiny, seed=args.seed)
    results = sw.launch(run_rank, args.nproc, args=(config,), timeout_s=900)[0]
    report = {
        "benchmark": "zero_vs_torch",
        **asdict(config),
        "nproc": args.nproc,
        **results["environment"],
        "torch_version": torch.__version__,
        "shardwise_version": sw.__version__,
        "machine": platform.machine(),
        "configs": results["configs"],
    }
    print(
        f"{args.nproc} ranks x {report['threads_per_rank']} thread(s); median over {args.steps} interleaved steps "
        f"after {args.warmup} warm-up; step time = slowest rank; IQR = Q3 - Q1; phases: medians, slowest rank; "
        "model state after optimizer.step(), before zero_grad()"
    )
    for name, result in results["configs"].items():
        print(f"\n### {name}: {result['description']}, {result['params']:,} parameters\n")
        print(markdown_table(result))
        print()
        for check in result["targets"]:
            print(f"- {check['target']}: {check['value']:.3f} -> {'met' if check['met'] else 'MISSED'}")
        for variant, entry in result["variants"].items():
            if not entry["params_agree"]:
                print(
                    f"WARNING: {name}: {variant} parameters differ from torch_ddp's by {entry['max_abs_param_diff']:.2e} "
                    f"(> {PARAM_AGREEMENT_ATOL:g}) after identical training",
                    file=sys.stderr,
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
