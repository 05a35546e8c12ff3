"""bench's configuration: parsing --configs, validating the settings, the model each setting means."""

import pytest

from shardwise.bench.cases import model_case, parameter_count
from shardwise.bench.config import CONFIG_NAMES, SHARDWISE_CONFIGS, BenchConfig, parse_configs
from shardwise.errors import ConfigError


def test_parse_configs_keeps_the_given_order():
    assert parse_configs("zero3,torch_ddp, ddp") == ("zero3", "torch_ddp", "ddp")
    assert parse_configs("all") == CONFIG_NAMES


@pytest.mark.parametrize("text, fragment", [
    ("ddp,zero4", "unknown configuration 'zero4'"),
    ("fsdp", "unknown configuration 'fsdp'"),
    ("", "at least one"),
    (" , ", "at least one"),
    ("ddp,ddp", "listed twice"),
])
def test_parse_configs_rejects_bad_lists_in_one_line(text, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_configs(text)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("settings, fragment", [
    ({"nproc": 0}, "--nproc"),
    ({"steps": 0}, "--steps"),
    ({"warmup": -1}, "--warmup"),
    ({"model": "resnet"}, "--model"),
    ({"model": "gpt", "width": 64}, "--width"),
    ({"width": 0}, "--width"),
    ({"rss": "both"}, "--rss"),
    ({"configs": ("ddp", "zero9")}, "zero9"),
    ({"timeout_s": 0.0}, "--timeout"),
])
def test_bench_config_rejects_bad_settings(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        BenchConfig(**settings)


def test_default_is_the_8_4m_mlp_under_all_seven_configurations_on_two_ranks():
    config = BenchConfig()
    assert config.configs == CONFIG_NAMES and len(CONFIG_NAMES) == 7 and config.nproc == 2
    assert parameter_count(config.case().build()) == 8 * (1024 * 1024 + 1024)


def test_width_and_depth_size_the_mlp():
    case = BenchConfig(width=64, depth=3, batch=5).case()
    assert parameter_count(case.build()) == 3 * (64 * 64 + 64)
    x, y = case.batches(rank=0, count=1, seed=0)[0]
    assert x.shape == y.shape == (5, 64)


def test_baseline_is_torch_ddp_when_it_runs_else_the_first_configuration():
    assert BenchConfig().baseline == "torch_ddp"
    assert BenchConfig(configs=SHARDWISE_CONFIGS).baseline == "ddp"


def test_gpt_case_batches_are_tokens_shifted_by_one():
    case = model_case("gpt", tiny=True)
    x, y = case.batches(rank=1, count=1, seed=0)[0]
    assert x.shape == y.shape == (case.batch, case.gpt.block_size)
    assert case.loss(case.build()(x), y).ndim == 0


def test_each_rank_draws_its_own_batches():
    case = model_case("mlp", tiny=True)
    (x0, _), (x1, _) = case.batches(0, 1, 0)[0], case.batches(1, 1, 0)[0]
    assert not (x0 == x1).all()
