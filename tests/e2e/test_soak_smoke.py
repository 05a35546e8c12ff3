import json
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_soak_script_runs_and_reports_growth(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "benchmarks/soak.py", "--steps", "20", "--every", "5", "--strategies", "ddp,zero3",
                           "--json", str(out)], capture_output=True, text=True, timeout=110)
    assert "largest growth after step" in done.stdout, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data) == {"ddp", "zero3"} and all(len(r["growth"]) == 2 for r in data.values())
