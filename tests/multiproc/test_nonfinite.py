"""A step whose loss is inf or NaN stops training with one line naming the step, or, with
on_nonfinite='skip', is skipped (no update) while training goes on."""

import math
import subprocess
import sys

import pytest

import shardwise as sw
from shardwise.errors import TrainingDiverged
from shardwise.models import GPTConfig
from shardwise.train import TrainConfig

TINY = GPTConfig(block_size=16, n_layer=1, n_embd=32, n_head=2)


def _train_with_nan_at(config, bad_step):
    """train_rank, with the loss of one step (1-based) multiplied by NaN on every rank."""
    import shardwise.train.loop as loop

    original, calls = loop.lm_loss, [0]

    def lm_loss(logits, targets):
        calls[0] += 1
        loss = original(logits, targets)
        return loss * float("nan") if calls[0] == bad_step else loss

    loop.lm_loss = lm_loss
    return loop.train_rank(config)


def _config(**kw):
    return TrainConfig.flat(steps=6, eval_every=100, global_batch=8, progress=False, model=TINY, **kw)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3"])
def test_stop_names_the_step(strategy):
    with pytest.raises(sw.WorkerError, match="at step 3") as info:
        sw.launch(_train_with_nan_at, 2, args=(_config(strategy=strategy), 3))
    assert isinstance(info.value.original, TrainingDiverged)
    assert "learning rate too high" in str(info.value.original)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["ddp", "zero2"])
def test_skip_skips_that_step_and_goes_on(strategy):
    per_rank = sw.launch(_train_with_nan_at, 2, args=(_config(strategy=strategy, on_nonfinite="skip"), 3))
    for result in per_rank:
        assert result["skipped_steps"] == [3]
        losses = result["local_losses"]
        assert math.isnan(losses[2]) and all(math.isfinite(x) for i, x in enumerate(losses) if i != 2)


@pytest.mark.timeout(120)
def test_too_many_skips_in_a_row_stop():
    with pytest.raises(sw.WorkerError, match="in 2 steps in a row"):
        sw.launch(_train_with_nan_at_all, 2, args=(_config(on_nonfinite="skip", max_skipped_steps=2),))


def _train_with_nan_at_all(config):
    import shardwise.train.loop as loop

    original = loop.lm_loss
    loop.lm_loss = lambda logits, targets: original(logits, targets) * float("nan")
    return loop.train_rank(config)


@pytest.mark.timeout(200)
def test_cli_stops_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "shardwise", "train", "--lr", "1e30", "--steps", "20", "--layers", "1",
                           "--block-size", "16", "--embd", "32", "--heads", "2", "--no-progress",
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training stopped: the loss is"), done.stderr
    assert "--lr 1e+30" in lines[0]
