import pytest

from shardwise.errors import ConfigError
from shardwise.train.config import TrainConfig
from shardwise.train.loop import lr_factor


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    config = TrainConfig.flat(steps=100, warmup_steps=10).optimization
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(100, config) == pytest.approx(0.1)
    values = [lr_factor(s, config) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("change, message", [
    ({"nproc": 3}, "global batch 32 does not split evenly over 3 training ranks"),
    ({"steps": 0}, "--steps must be at least 1"),
    ({"lr": -1.0}, "--lr must be positive"),
    ({"local_warmup": 5}, "--local-warmup applies to local-sgd, not 'ddp'"),
    ({"pp_split": "auto"}, "--pp-split apply to pipelines: add --pp STAGES"),
    ({"pp": 2, "pp_split": "blocks.9"}, "split point 'blocks.9' is not a layer of the pipeline"),
    ({"pp": 2, "pp_split": "blocks.1,blocks.2"}, "split needs 1 cut points for 2 stages"),
])
def test_validation_messages(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.flat(**change).validate()


def test_local_warmup_is_local_sgds_synchronous_start():
    strategy = TrainConfig.flat(strategy="local-sgd", period=4, local_warmup=7).validate()
    assert (strategy.period, strategy.warmup_steps) == (4, 7)
    assert TrainConfig.flat(strategy="local-sgd").validate().warmup_steps == 0


def test_pipeline_cut_points_from_the_command_line():
    mesh = TrainConfig.flat(pp=2, pp_split="auto").validate()
    assert mesh.pipeline_config().split == "auto"
    mesh = TrainConfig.flat(pp=2, nproc=2, pp_split="blocks.1").validate()
    assert mesh.pipeline_config().split == ("blocks.1",)
