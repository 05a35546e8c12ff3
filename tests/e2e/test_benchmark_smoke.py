"""The DDP benchmark runs end to end at a tiny size and writes a complete report (CI smoke test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "ddp_vs_torch.py"


@pytest.mark.timeout(120)
def test_ddp_vs_torch_tiny_writes_both_configurations(tmp_path):
    report_path = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--json", str(report_path)],
        cwd=tmp_path,  # not the repo root: the script must find its helper module by itself
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| model |" in completed.stdout  # the markdown table

    report = json.loads(report_path.read_text())
    assert report["nproc"] == 2
    assert set(report["configs"]) == {"mlp", "gpt"}
    for name, result in report["configs"].items():
        for variant in ("shardwise", "torch_ddp", "local"):
            timing = result[variant]
            assert timing["n"] == report["steps"], (name, variant)
            assert timing["median_ms"] > 0, (name, variant)
            assert all(seconds > 0 for seconds in timing["seconds"]), (name, variant)
        assert result["ratio_shardwise_over_torch"] > 0
        # Same start, same batches, same gradient averaging: the two DDPs must train identically.
        assert result["params_agree"], (name, result["max_abs_param_diff"])
        assert result["shardwise_comm_bytes_per_step"] > 0
