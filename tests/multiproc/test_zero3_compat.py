"""ZeRO-3 with the rest of PyTorch: torch.compile, modules reused in forward, activation
checkpointing, `sw.gathered`, and state dicts in PyTorch DDP's form (issue 11).

Parity is against one process training on the whole global batch (rtol 1e-5, atol 1e-6), or
against PyTorch DDP where the state dict's form is the question. All at N = 2.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import shardwise as sw
from shardwise.errors import ConfigError

RTOL, ATOL = 1e-5, 1e-6
N = 2
STEPS = 3
GLOBAL = 8


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(F.gelu(self.up(self.norm(x))))


class Stack(nn.Module):
    """Blocks in a ModuleList (stage-3 units), run in `order`, optionally checkpointed; a tied
    input/output matrix (the root unit) and a constant buffer (a state-dict entry that is no parameter)."""

    def __init__(self, width: int = 8, blocks: int = 4, order=None, checkpointed: str = "none"):
        super().__init__()
        self.embed = nn.Linear(5, width, bias=False)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.head = nn.Linear(width, 5, bias=False)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 5))
        self.order = list(order) if order is not None else list(range(blocks))
        self.checkpointed = checkpointed

    def forward(self, x):
        hidden = self.embed(x)
        for i in self.order:
            block = self.blocks[i]
            if self.checkpointed == "none":
                hidden = block(hidden)
            else:
                hidden = checkpoint(block, hidden, use_reentrant=self.checkpointed == "reentrant")
        return self.head(hidden) * self.scale


def _batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(GLOBAL, 5, generator=g), torch.randn(GLOBAL, 5, generator=g)


def _build(spec: dict) -> nn.Module:
    torch.manual_seed(0)
    return Stack(order=spec.get("order"), checkpointed=spec.get("checkpointed", "none"))


def _optimizer(params):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)


def _reference(spec: dict) -> dict:
    model = _build(spec)
    optimizer = _optimizer(model.parameters())
    for step in range(STEPS):
        x, y = _batch(step)
        F.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_zero3(spec: dict) -> dict:
    torch.set_num_threads(1)
    model = stack = _build(spec)
    if spec.get("compile") == "before":
        model = torch.compile(model, backend=spec["backend"])
    model, optimizer = sw.wrap(model, _optimizer, strategy=sw.ZeRO(stage=3, prefetch=spec.get("prefetch", 1), min_unit_mb=0,
                                                                    keep_for_backward=spec.get("keep", True)))
    if spec.get("compile") == "after":
        model = torch.compile(model, backend=spec["backend"])
    rank, world = sw.rank(), sw.world_size()
    for step in range(STEPS):
        x, y = _batch(step)
        if "probe" in spec:  # a forward with gradients on that no backward follows, in another order
            order, stack.order = stack.order, spec["probe"]
            model(x[rank::world].contiguous())
            stack.order = order
        F.mse_loss(model(x[rank::world].contiguous()), y[rank::world].contiguous()).backward()
        if "short_eval" in spec:  # prefetches a unit it never uses, just before the parameters change
            order, stack.order = stack.order, spec["short_eval"]
            with torch.no_grad():
                model(x[rank::world].contiguous())
            stack.order = order
        optimizer.step()
        optimizer.zero_grad()
    return {k.replace("_orig_mod.", ""): v for k, v in sw.full_state_dict(model).items()}


def _train_all(specs: list[dict]) -> list:
    results = []
    for spec in specs:
        try:
            results.append(_train_zero3(spec))
        except Exception as exc:  # report which spec failed, keep the others
            results.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return results


def _mismatches(specs, per_rank) -> list[str]:
    problems = []
    for index, spec in enumerate(specs):
        reference = _reference(spec)
        for rank, results in enumerate(per_rank):
            got = results[index]
            if isinstance(got, str):
                problems.append(f"{spec} rank {rank}: {got}")
                continue
            for key, expected in reference.items():
                if got[key].shape != expected.shape or not torch.allclose(got[key], expected, rtol=RTOL, atol=ATOL):
                    problems.append(f"{spec} rank {rank}: {key} differs")
    return problems


REUSED = [0, 1, 2, 3, 0]


@pytest.mark.timeout(150)
def test_reuse_checkpointing_and_compile_train_with_parity():
    """Blocks reused far apart (0,1,2,3,0) at the default prefetch; checkpointed blocks (both
    kinds, and reused); torch.compile before and after wrap (aot_eager: autograd traced, as inductor);
    forwards that no backward follows, in orders other than the training forward's."""
    specs = [
        {"order": REUSED},
        {"order": REUSED, "prefetch": 0},
        {"order": [0, 1, 0, 1, 2, 3, 2]},
        {"checkpointed": "non-reentrant"},
        {"checkpointed": "reentrant"},
        {"checkpointed": "non-reentrant", "order": REUSED},
        {"checkpointed": "reentrant", "order": REUSED},
        {"compile": "before", "backend": "aot_eager"},
        {"compile": "after", "backend": "aot_eager"},
        {"compile": "after", "backend": "aot_eager", "order": REUSED, "checkpointed": "non-reentrant"},
        {"probe": [0, 1, 2, 3, 0, 1]},  # units kept for a backward that never comes, then a longer forward
        {"probe": [0, 1], "order": REUSED},
        {"short_eval": [0]},  # block 1, prefetched before the step, must not run on its old parameters
        {"short_eval": [0], "probe": [0, 1, 2, 3, 0, 1], "keep": False},
    ]
    per_rank = sw.launch(_train_all, N, args=(specs,), timeout_s=140)
    assert _mismatches(specs, per_rank) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_inductor_compile_before_and_after_wrap():
    specs = [{"compile": "before", "backend": "inductor"}, {"compile": "after", "backend": "inductor"}]
    per_rank = sw.launch(_train_all, N, args=(specs,), timeout_s=290)
    assert _mismatches(specs, per_rank) == []


# --- state dicts and sw.gathered -------------------------------------------------------------


def _state_dicts_on_rank() -> dict:
    """Per strategy: our wrapped state_dict against PyTorch DDP's after the same training."""
    torch.set_num_threads(1)
    rank, world = sw.rank(), sw.world_size()
    out = {}
    for strategy in ("zero1", "zero2", "zero3"):
        model = _build({})
        ddp = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(model))
        ddp_optimizer = _optimizer(ddp.parameters())
        wrapped, optimizer = sw.wrap(model, _optimizer, strategy=strategy)
        for step in range(STEPS):
            x, y = _batch(step)
            x, y = x[rank::world].contiguous(), y[rank::world].contiguous()
            for m, opt in ((wrapped, optimizer), (ddp, ddp_optimizer)):
                F.mse_loss(m(x), y).backward()
                opt.step()
                opt.zero_grad()
        ours, theirs = wrapped.state_dict(), ddp.state_dict()
        result = {"ours": ours, "ddp": theirs}
        # Load DDP's state (prefixed) and the inner module's (unprefixed) into fresh wrapped models.
        torch.manual_seed(5)
        fresh, _ = sw.wrap(Stack(), _optimizer, strategy=strategy)
        fresh.load_state_dict(theirs)
        result["loaded_prefixed"] = fresh.state_dict()
        torch.manual_seed(6)
        fresh, _ = sw.wrap(Stack(), _optimizer, strategy=strategy)
        fresh.load_state_dict({k[len("module."):]: v for k, v in theirs.items()})
        result["loaded_plain"] = fresh.state_dict()
        out[strategy] = result
    return out


def _gathered_on_rank() -> dict:
    """zero3: the inner module's state_dict refuses outside sw.gathered; inside it, rank 0 alone
    evaluates and reads it; on exit parameters are sharded again and training goes on."""
    torch.set_num_threads(1)
    rank, world = sw.rank(), sw.world_size()
    model, optimizer = sw.wrap(_build({"order": REUSED}), _optimizer, strategy="zero3")
    raw = model.module
    out = {}
    try:
        raw.state_dict()
        out["outside"] = "no error"
    except ConfigError as exc:
        out["outside"] = str(exc)
    x, y = _batch(0)
    with sw.gathered(model):
        if rank == 0:  # alone: nothing inside communicates
            with torch.no_grad():
                out["eval_wrapped"] = model(x)
                out["eval_inner"] = raw(x)
            out["inner_state"] = {k: v.clone() for k, v in raw.state_dict().items()}
            out["wrapped_state_inside"] = model.state_dict()
    out["shapes_after"] = {n: tuple(p.shape) for n, p in raw.named_parameters()}
    for step in range(STEPS):
        x, y = _batch(step)
        F.mse_loss(model(x[rank::world].contiguous()), y[rank::world].contiguous()).backward()
        optimizer.step()
        optimizer.zero_grad()
    out["trained"] = sw.full_state_dict(model)
    return out


def _both(_=None):
    return {"state_dicts": _state_dicts_on_rank(), "gathered": _gathered_on_rank()}


def _close(a, b) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.timeout(120)
def test_state_dicts_are_ddps_and_gathered_lets_one_rank_evaluate():
    per_rank = sw.launch(_both, N, timeout_s=110)
    for rank, result in enumerate(per_rank):
        for strategy, r in result["state_dicts"].items():
            ours, theirs = r["ours"], r["ddp"]
            assert list(ours) == list(theirs), (strategy, rank, list(ours), list(theirs))
            for key in theirs:
                assert ours[key].dtype == theirs[key].dtype and _close(ours[key], theirs[key]), (strategy, rank, key)
            for loaded in ("loaded_prefixed", "loaded_plain"):
                assert all(_close(r[loaded][k], theirs[k]) for k in theirs), (strategy, rank, loaded)
        g = result["gathered"]
        assert "sw.gathered" in g["outside"] and "state_dict()" in g["outside"], g["outside"]
        assert all(shape == (0,) for shape in g["shapes_after"].values()), g["shapes_after"]
    reference_model = _build({"order": REUSED})
    gathered = per_rank[0]["gathered"]
    x, _ = _batch(0)
    with torch.no_grad():
        expected = reference_model(x)
    assert _close(gathered["eval_wrapped"], expected) and _close(gathered["eval_inner"], expected)
    initial = reference_model.state_dict()
    assert list(gathered["inner_state"]) == list(initial)
    assert all(_close(gathered["inner_state"][k], initial[k]) for k in initial)
    assert all(_close(gathered["wrapped_state_inside"][f"module.{k}"], initial[k]) for k in initial)
    trained = _reference({"order": REUSED})
    for rank, result in enumerate(per_rank):
        assert all(_close(result["gathered"]["trained"][k], trained[k]) for k in trained), rank


# --- a forward run by one rank only -----------------------------------------------------------


def _one_rank_evaluates() -> str:
    torch.set_num_threads(1)
    rank, world = sw.rank(), sw.world_size()
    model, optimizer = sw.wrap(_build({}), _optimizer, strategy="zero3")
    try:
        for step in range(STEPS):
            x, y = _batch(step)
            F.mse_loss(model(x[rank::world].contiguous()), y[rank::world].contiguous()).backward()
            optimizer.step()
            optimizer.zero_grad()
            if rank == 0 and step == 0:  # nanoGPT's estimate_loss() on the master process, without sw.gathered
                with torch.no_grad():
                    model(x)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "finished"


@pytest.mark.timeout(90)
def test_a_forward_on_one_rank_fails_on_every_rank_with_one_line():
    per_rank = sw.launch(_one_rank_evaluates, N, timeout_s=80, collective_timeout_s=4)
    for rank, message in enumerate(per_rank):
        assert message.startswith("ConfigError: ") and "every rank must run every forward" in message, (rank, message)
        assert "sw.gathered(model)" in message and "\n" not in message, (rank, message)


def _one_rank_evaluates_at_the_end() -> str:
    """Rank 0 evaluates alone after the last step; then each rank does what `launch` does when
    its function returns (run the shutdown callbacks), where rank 1 must fail too."""
    from shardwise.runtime import progress

    torch.set_num_threads(1)
    rank, world = sw.rank(), sw.world_size()
    model, optimizer = sw.wrap(_build({}), _optimizer, strategy="zero3")
    x, y = _batch(0)
    F.mse_loss(model(x[rank::world].contiguous()), y[rank::world].contiguous()).backward()
    optimizer.step()
    try:
        if rank == 0:
            with torch.no_grad():
                model(x)
        progress.run_finishers()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "finished"


@pytest.mark.timeout(90)
def test_a_forward_on_one_rank_at_the_end_fails_on_every_rank():
    per_rank = sw.launch(_one_rank_evaluates_at_the_end, N, timeout_s=80, collective_timeout_s=4)
    for rank, message in enumerate(per_rank):
        assert message.startswith("ConfigError: ") and "every rank must run every forward" in message, (rank, message)
        assert "\n" not in message, (rank, message)
