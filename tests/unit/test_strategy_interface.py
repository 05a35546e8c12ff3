"""Every registered strategy answers the strategy interface, and the shared math and
vocabulary it rests on behave (no processes)."""

import dataclasses
import random

import pytest
import torch

from shardwise.api import REGISTRY, build_strategy, resolve_strategy
from shardwise.errors import ConfigError
from shardwise.flat.ranges import even_range, even_ranges, offsets, parts_in_range
from shardwise.ps import ParameterServer
from shardwise.strategy.base import PlanTraits, Strategy
from shardwise.strategy.pieces import assemble, split_state, state_slice, to_file, SavedPiece
from shardwise.train import TrainConfig
from shardwise.vocab import MB, MIB, as_dtype, bytes_per_value


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_strategy_implements_the_interface(name):
    strategy = REGISTRY[name]()
    assert isinstance(strategy, Strategy) and dataclasses.is_dataclass(strategy)
    assert strategy.name == name
    for world in (2, 3, 5):
        trainers = strategy.training_ranks(world)
        assert len(trainers) >= 1
        assert [strategy.role(r, world) for r in range(world)].count("worker") == len(trainers)
    assert strategy.with_precision("fp32") == strategy
    traits = strategy.planner()
    assert traits is None or isinstance(traits, PlanTraits)


def test_parameter_server_roles_and_pace():
    sync, asynchronous = ParameterServer(servers=2), ParameterServer(servers=1, mode="async")
    assert list(sync.training_ranks(5)) == [2, 3, 4]
    assert [sync.role(r, 5) for r in range(5)] == ["server", "server", "worker", "worker", "worker"]
    assert sync.wraps_together and sync.steps_together
    assert not asynchronous.wraps_together and not asynchronous.steps_together
    with pytest.raises(ConfigError, match="fp32"):
        sync.with_precision("bf16")


def test_precision_is_the_strategy_s_own_business():
    assert resolve_strategy("ddp").with_precision("bf16").name == "ddp"
    assert not resolve_strategy("ddp").casts_itself and resolve_strategy("zero2").casts_itself
    assert resolve_strategy("zero3").with_precision("fp16").param_dtype == "fp16"
    assert resolve_strategy("zero1").with_precision("fp32").param_dtype is None
    with pytest.raises(ConfigError, match="--precision fp16 needs loss scaling"):
        resolve_strategy("ddp").with_precision("fp16")
    with pytest.raises(ConfigError, match="--precision must be"):
        resolve_strategy("ddp").with_precision("fp8")


def test_planner_traits_follow_the_zero_stages():
    ddp, z1, z2, z3 = (resolve_strategy(n).planner() for n in ("ddp", "zero1", "zero2", "zero3"))
    assert ddp == PlanTraits()
    assert (z1.shards_optimizer, z1.shards_grads, z1.shards_params) == (True, False, False)
    assert (z2.shards_grads, z2.shards_params) == (True, False)
    assert z3.shards_params and z3.parameter_gathers == 2 and not z3.reduces_by_all_reduce
    assert resolve_strategy("ps").planner() is None


def test_build_strategy_applies_options_and_names_who_has_an_option():
    assert build_strategy("zero2", "bf16", offload="cpu").offload == "cpu"
    assert build_strategy("ps", servers=2, mode="ssp").servers == 2
    assert build_strategy("ddp", offload="none").name == "ddp"  # a default value asks nothing
    with pytest.raises(ConfigError, match="--offload applies to zero1, zero2, zero3, not 'ddp'"):
        build_strategy("ddp", offload="cpu")
    with pytest.raises(ConfigError, match="unknown strategy 'zero4'"):
        build_strategy("zero4")
    with pytest.raises(ConfigError, match="strategy must be a name or a strategy object"):
        resolve_strategy(object())


@pytest.mark.parametrize("numel, world", [(0, 3), (7, 3), (10, 4), (5, 8), (1000, 7)])
def test_even_ranges_tile_and_differ_by_at_most_one(numel, world):
    ranges = even_ranges(numel, world)
    assert ranges[0][0] == 0 and ranges[-1][1] == numel
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [end - start for start, end in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert ranges[1 % world] == even_range(numel, 1 % world, world)
    with pytest.raises(ValueError):
        even_range(numel, world, world)


def test_parts_in_range_match_element_by_element():
    rng = random.Random(0)
    for _ in range(200):
        numels = [rng.randint(0, 6) for _ in range(rng.randint(1, 6))]
        total = sum(numels)
        lo = rng.randint(0, total)
        hi = rng.randint(lo, total)
        owner = [(i, k) for i, n in enumerate(numels) for k in range(n)]  # element -> (item, index in item)
        expected = {}
        for position in range(lo, hi):
            item, k = owner[position]
            expected.setdefault(item, []).append((k, position - lo))
        got = parts_in_range(numels, lo, hi)
        assert [p[0] for p in got] == sorted(expected)
        for item, start, end, at in got:
            assert [(k, at + k - start) for k in range(start, end)] == expected[item]
    assert offsets([3, 0, 2]) == [0, 3, 3]


def test_vocabulary():
    assert (MIB, MB) == (1 << 20, 10 ** 6)
    assert as_dtype("bfloat16") is torch.bfloat16 and as_dtype("fp16") is torch.float16 and as_dtype(None) is None
    assert [bytes_per_value(p) for p in ("fp32", "bf16", "fp16", "mixed")] == [4, 2, 2, 2]
    with pytest.raises(ConfigError, match="unknown dtype"):
        as_dtype("int3")


def test_pieces_reassemble_into_full_state_with_scalars():
    param = torch.arange(10.0).reshape(2, 5)
    state = {"exp_avg": param * 2, "step": torch.tensor(3.0)}
    per_element, scalars = split_state(state, param.numel())
    assert set(per_element) == {"exp_avg"} and set(scalars) == {"step"}
    pieces = [SavedPiece("w", a, b, param.reshape(-1)[a:b].clone(),
                         {"exp_avg": per_element["exp_avg"][a:b].clone()}, scalars) for a, b in even_ranges(10, 3)]
    params, optim, incomplete = assemble([to_file(pieces[:2]), to_file(pieces[2:])], {"w": (2, 5)})
    assert incomplete == [] and torch.equal(params["w"], param)
    assert torch.equal(optim["w"]["exp_avg"], param * 2) and optim["w"]["step"] == 3.0
    part = state_slice(optim["w"], 10, 4, 7)
    assert torch.equal(part["exp_avg"], torch.tensor([8.0, 10.0, 12.0])) and part["step"] == 3.0
    _, _, incomplete = assemble([to_file(pieces[:2])], {"w": (2, 5)})
    assert incomplete == ["w"]


def test_train_config_parts_from_flat_names():
    config = TrainConfig.flat(strategy="ps", nproc=3, servers=1, steps=5, global_batch=8, keep_checkpoints=3, report="r.json")
    assert (config.strategy.name, config.strategy.nproc, config.strategy.servers) == ("ps", 3, 1)
    assert (config.optimization.steps, config.data.global_batch, config.checkpointing.keep) == (5, 8, 3)
    assert config.report == "r.json"
    assert list(config.validate().training_ranks(3)) == [1, 2]
    with pytest.raises(ConfigError, match="unknown training setting 'stepz'"):
        TrainConfig.flat(stepz=3)
    with pytest.raises(ConfigError, match="--keep-checkpoints must be at least 1"):
        TrainConfig.flat(keep_checkpoints=0).checkpointing.validate()
    with pytest.raises(ConfigError, match="--eval-every must be at least 1"):
        TrainConfig.flat(eval_every=0).data.validate()
    with pytest.raises(ConfigError, match="--nproc 1 leaves no rank to train"):
        TrainConfig.flat(strategy="ps", nproc=1).validate()
