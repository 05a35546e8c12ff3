"""The report names parameter-server workers and servers, and places a resumed run's losses at
their true steps (next to validation losses, which carry their steps)."""

from shardwise.train import TrainConfig
from shardwise.train.loop import ranks_label as bar_label
from shardwise.train.report import build_report, loss_steps, ranks_label


def _rank_result(start_step=0, losses=(2.0, 1.0)):
    return {"local_losses": list(losses), "step_times": [0.1] * len(losses), "start_step": start_step,
            "evals": [(start_step + len(losses), 1.5)], "samples": 8, "train_seconds": 1.0, "peak_rss_bytes": 1,
            "model_state_bytes": 1, "comm_bytes_per_step": 0, "skipped_steps": []}


def test_ps_is_named_as_workers_and_servers():
    config = TrainConfig.flat(strategy="ps", nproc=3, servers=1)
    report = build_report(config, [None, _rank_result(), _rank_result()])
    assert report["workers"] == 2 and report["servers"] == 1
    assert ranks_label(report) == "2 workers + 1 server" == bar_label(config.strategy.build(), 3)


def test_data_parallel_label_counts_ranks():
    config = TrainConfig.flat(strategy="ddp", nproc=2)
    assert ranks_label(build_report(config, [_rank_result(), _rank_result()])) == "2 ranks"
    assert bar_label(config.strategy.build(), 2) == "x2"


def test_resumed_losses_sit_at_their_true_steps():
    report = build_report(TrainConfig(), [_rank_result(start_step=650, losses=(1.2, 1.1, 1.0))] * 2)
    assert list(loss_steps(report)) == [651, 652, 653]
    assert report["val_losses"] == [{"step": 653, "loss": 1.5}]


def test_a_skipped_step_is_null_in_the_report():
    report = build_report(TrainConfig(), [_rank_result(losses=(2.0, float("nan"), 1.0))] * 2)
    assert report["losses"] == [2.0, None, 1.0]
