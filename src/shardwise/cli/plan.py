"""`shardwise plan`: per-device memory and predicted step time for DDP and ZeRO 1-3 (the strategies
the planner models) at any scale. GB here is 10**9 bytes (`vocab.GB`, [Note: byte units])."""

from __future__ import annotations

import json

from ..errors import ConfigError
from ..plan import PLAN_PRECISIONS, from_hf_config, from_shape, plan_rows
from ..plan.model_parallel import model_parallel_row
from ..plan.model_spec import ModelSpec
from ..vocab import GB
from .parser import positive_int, positive_real, real_number


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="predict memory and step time per device for DDP and ZeRO 1-3",
                              description="Memory per device (model states; activations with and without "
                                          "checkpointing), which strategies fit, and predicted step time. "
                                          "GB means 10^9 bytes.")
    model = p.add_argument_group("model (one of: --params, --config, or the shape flags)")
    model.add_argument("--params", type=positive_real, help="trainable parameters, e.g. 7.5e9")
    model.add_argument("--config", help="a Hugging Face style config.json")
    model.add_argument("--layers", type=positive_int, help="transformer blocks")
    model.add_argument("--hidden", type=positive_int, help="hidden size (model width)")
    model.add_argument("--heads", type=positive_int, help="attention heads")
    model.add_argument("--vocab", type=positive_int, default=50257, help="vocabulary size")
    model.add_argument("--seq-len", type=positive_int, help="sequence length (default: the config's)")
    p.add_argument("--world-size", default="8", help="devices; a comma-separated list for several")
    p.add_argument("--precision", default="mixed", choices=list(PLAN_PRECISIONS),
                   help="mixed: 16-bit parameters and gradients with fp32 masters (ZeRO paper's 16 bytes/param); "
                        "bf16 and fp16 count the same bytes as mixed")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd", "sgd-momentum"],
                   help="decides the optimizer state per parameter")
    p.add_argument("--offload", action="store_true", help="optimizer state and fp32 masters on the CPU")
    p.add_argument("--micro-batch", type=positive_int, default=1,
                   help="sequences per device per step (of --seq-len tokens, default 2048 without a shape)")
    p.add_argument("--device-memory", type=positive_real, default=80.0, help="GB (10^9 bytes) per device")
    p.add_argument("--device-tflops", type=positive_real, default=312.0, help="peak TFLOP/s per device")
    p.add_argument("--mfu", type=real_number(above=0, most=1), default=0.5,
                   help="fraction of peak the kernels reach (0 < mfu <= 1)")
    p.add_argument("--bandwidth", type=positive_real, default=25.0,
                   help="GB/s (10^9 bytes/s) each device sends to the others")
    mp = p.add_argument_group("model parallelism (with a model shape): adds a table for a dp x pp x tp mesh")
    mp.add_argument("--pp", type=positive_int, default=1, help="pipeline stages")
    mp.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel ranks per stage")
    mp.add_argument("--tp-vocab", action="store_true",
                    help="the token embedding and tied head split by vocabulary rows over --tp ranks, "
                         "the cross-entropy computed over the split logits (as 'shardwise train --tp-vocab')")
    mp.add_argument("--microbatches", type=positive_int, default=None, help="pipeline micro-batches per step (default: pp)")
    mp.add_argument("--schedule", default="1f1b", choices=["gpipe", "1f1b", "interleaved-1f1b", "zb-h1"],
                    help="pipeline schedule (decides the activations a rank keeps and the bubble)")
    mp.add_argument("--dp-strategy", default="ddp", choices=["ddp", "zero1", "zero2"],
                    help="how the data-parallel replicas meet")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(run=main)


def parse_world_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--world-size takes whole numbers separated by commas, got '{text}'") from None
    if not sizes or any(n < 1 for n in sizes):
        raise ConfigError(f"--world-size values must be at least 1, got '{text}'")
    return sizes


def model_from_args(args) -> ModelSpec:
    if args.config:
        return from_hf_config(args.config, args.seq_len)
    if args.layers or args.hidden or args.heads:
        return from_shape(args.layers, args.hidden, args.heads, args.vocab, args.seq_len or 1024)
    if args.params is None:
        raise ConfigError("give the model as --params N, --config config.json, or --layers/--hidden/--heads")
    if not args.params > 0:
        raise ConfigError(f"--params must be positive, got {args.params:g}")
    return ModelSpec(args.params, seq_len=args.seq_len)


def main(args) -> int:
    for name in ("device_memory", "device_tflops", "mfu", "bandwidth"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    model = model_from_args(args)
    world_sizes = parse_world_sizes(args.world_size)
    mesh_rows = _mesh_rows(args, model, world_sizes)
    rows = plan_rows(model, world_sizes, args.precision, args.optimizer, args.offload,
                     args.micro_batch, args.device_memory * GB, args.device_tflops * 1e12, args.mfu, args.bandwidth * GB)
    if args.json:
        print(json.dumps({"model": model.__dict__, "rows": rows, **({"mesh_rows": mesh_rows} if mesh_rows else {})},
                         indent=1))
        return 0
    print(f"model: {model.params / 1e9:.3g}B parameters" + (
        f", {model.layers} layers, hidden {model.hidden}, {model.heads} heads, seq {model.seq_len}" if model.has_shape else ""))
    print(f"assumed: {args.precision} precision, {args.optimizer}, {args.device_memory:g} GB/device, "
          f"{args.device_tflops:g} TFLOP/s x {args.mfu:g} MFU, {args.bandwidth:g} GB/s links"
          + (", optimizer offloaded to CPU" if args.offload else ""))
    print(format_table(rows, model.has_shape))
    print(COLUMNS_EXPLAINED)
    if mesh_rows:
        print(f"\npipeline and tensor parallelism (per rank; rank 0 of the first stage; --micro-batch {args.micro_batch} "
              f"sequences per micro-batch):")
        print(format_mesh_table(mesh_rows))
    return 0


def _mesh_rows(args, model: ModelSpec, world_sizes: list[int]) -> list[dict]:
    if args.pp * args.tp == 1:
        if args.tp_vocab:
            raise ConfigError("--tp-vocab applies with --tp 2 or more")
        if args.microbatches is not None:
            raise ConfigError("--microbatches applies with --pp")
        return []
    bad = [n for n in world_sizes if n % (args.pp * args.tp)]
    if bad:
        raise ConfigError(f"--world-size {bad[0]} is not a multiple of --pp {args.pp} x --tp {args.tp}")
    return [model_parallel_row(model, n, args.pp, args.tp, args.microbatches or args.pp, args.schedule,
                               args.dp_strategy, args.precision, args.optimizer, args.micro_batch,
                               device_memory=args.device_memory * GB, vocab_parallel=args.tp_vocab)
            for n in world_sizes]


def format_mesh_table(rows: list[dict]) -> str:
    head = ["N", "dp x pp x tp", "schedule", "M", "params/rank", "states GB", "acts GB", "stored mb", "fits", "bubble",
            "TP MB/layer/mb", "TP GB/step", "PP GB/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["world_size"]), f"{r['dp']} x {r['pp']} x {r['tp']}", r["schedule"], str(r["microbatches"]),
                 f"{r['params_per_rank'] / 1e9:.3g}B", _gb(r["model_state_bytes"]), _gb(r["activation_bytes"]),
                 f"{r['stored_microbatches']:g}", _yes(r["fits"]), f"{r['bubble']:.3f}",
                 f"{r['tp_bytes_per_layer_per_microbatch'] / 1e6:.3g}", _gb(r["tp_bytes_per_step"]), _gb(r["pp_bytes_per_step"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS_EXPLAINED = (
    "states: params + grads + optimizer state; acts: activations (ckpt: with activation checkpointing); "
    "step s: communication overlapped with compute; step s serial: the same step if communication waited for "
    "compute (no overlap); the truth lies between them")


def format_table(rows: list[dict], with_shape: bool) -> str:
    head = ["strategy", "N", "params GB", "grads GB", "optim GB", "states GB"]
    if with_shape:
        head += ["acts GB", "acts ckpt GB", "fits", "fits ckpt"]
    else:
        head += ["fits"]
    head += ["comm GB/step", "step s", "step s serial", "tokens/s", "TFLOP/s/dev"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["strategy"], str(r["world_size"]), _gb(r["params_bytes"]), _gb(r["grads_bytes"]),
                 _gb(r["optimizer_bytes"]), _gb(r["model_state_bytes"])]
        if with_shape:
            cells += [_gb(r["activation_bytes"]), _gb(r["activation_bytes_checkpointed"]), _yes(r["fits"]),
                      _yes(r["fits_checkpointed"])]
        else:
            cells += [_yes(r["fits"])]
        cells += [_gb(r["comm_bytes_per_step"]), f"{r['step_s_overlap']:.3g}", f"{r['step_s_serial']:.3g}",
                  f"{r['tokens_per_s']:,.0f}", f"{r['tflops_per_device']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gb(value: float) -> str:
    return f"{value / GB:.3g}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
