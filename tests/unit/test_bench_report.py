"""bench's table, lines and charts, from a hand-made report (no processes)."""

import pytest

from shardwise.bench.charts import plot_memory, plot_step_times
from shardwise.bench.report import markdown_table, megabytes, preamble, rss_cell, warnings

MB = 10**6


def entry(median_ms, ratio, states, predicted=None, comm=None, parity=True, rss_before=None):
    params, grads, optimizer, other = states
    return {
        "median_ms": median_ms, "q1_ms": median_ms - 1, "q3_ms": median_ms + 2, "iqr_ms": 3.0,
        "ratio_to_baseline": ratio,
        "model_state_bytes": [params + grads + optimizer + other, params + grads + optimizer + other - 8],
        "model_state_split": {"params": [params, params - 8], "grads": [grads] * 2, "optimizer": [optimizer] * 2,
                              "other": [other] * 2},
        "predicted": predicted, "comm_bytes_per_step": comm,
        "peak_rss_bytes": [500 * MB, 520 * MB], **({"rss_before_model_bytes": rss_before} if rss_before else {}),
        "loss_abs_diff": 0.0 if parity else 0.5, "max_abs_param_diff": 0.0 if parity else 0.25, "parity": parity,
    }


@pytest.fixture
def report():
    predicted = {"params": 16.8 * MB, "grads": 16.8 * MB, "optimizer": 33.6 * MB, "total": 67.2 * MB,
                 "comm_bytes_per_step": 50.4 * MB}
    return {
        "baseline": "torch_ddp", "rss_mode": "separate", "world_size": 2, "threads_per_rank": 1,
        "model": {"description": "MLP 8x1024", "params": 8_396_800},
        "config": {"steps": 15, "warmup": 3},
        "configs": {
            "torch_ddp": entry(130.0, 1.0, (33.6 * MB, 33.6 * MB, 67.2 * MB, 0), rss_before=[300 * MB, 310 * MB]),
            "zero3": entry(120.0, 0.923, (16.8 * MB, 16.8 * MB, 33.6 * MB, 21 * MB), predicted=predicted,
                           comm=[50.4 * MB, 50.4 * MB], parity=False, rss_before=[300 * MB, 310 * MB]),
        },
    }


def test_table_has_a_row_per_configuration_with_measured_and_predicted(report):
    lines = markdown_table(report).splitlines()
    assert lines[0].startswith("| config | step ms (IQR) | / torch_ddp | peak RSS MB |")
    assert len(lines) == 4 and all(line.count("|") == 9 for line in lines)
    baseline, zero3 = (line.split(" | ") for line in lines[2:])
    assert baseline[1:4] == ["130.0 (3.0)", "1.000", "520 (+210)"]
    assert baseline[4] == "33.6 / 33.6 / 67.2 / 0 = 134.4"  # the rank holding most
    assert baseline[5:7] == ["-", "-"] and baseline[7] == "baseline |"
    assert zero3[4] == "16.8 / 16.8 / 33.6 / 21.0 = 88.2"
    assert zero3[5] == "16.8 / 16.8 / 33.6 = 67.2"
    assert zero3[6] == "50.4 (50.4)"
    assert zero3[7].startswith("FAILED (5.0e-01, 2.5e-01)")


def test_lines_around_the_table_say_how_it_was_measured(report):
    assert "RSS: a fresh launch per configuration" in preamble(report)
    report["rss_mode"] = "shared"
    assert "max over all configurations" in preamble(report)
    assert warnings(report) == [
        "WARNING: zero3 differs from torch_ddp after identical training: final loss by 5.00e-01, "
        "parameters by up to 2.50e-01"]


def test_megabytes_keep_three_significant_digits_when_small():
    assert [megabytes(b) for b in (134.4 * MB, 33.6 * MB, 5.25 * MB, 33_280, 0)] == ["134.4", "33.6", "5.25", "0.0333", "0"]


def test_shared_rss_has_no_added_part():
    assert rss_cell({"peak_rss_bytes": [400 * MB, 450 * MB]}) == "450"


def test_charts_are_written(report, tmp_path):
    plot_step_times(report, str(tmp_path / "step_time.png"))
    plot_memory(report, str(tmp_path / "memory.png"))
    for name in ("step_time.png", "memory.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
