"""The command line as a user runs it: a short training run, its report, a sample, bad input."""

import json
import os
import subprocess
import sys

import pytest

from shardwise.models import GPTConfig

REPORT_FIELDS = {"strategy", "world_size", "steps", "losses", "step_time_s", "tokens_per_s",
                 "peak_rss_bytes", "model_state_bytes", "comm_bytes_per_step"}


def shardwise(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "shardwise", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_short_training_run_writes_report_plot_checkpoint_and_samples(tmp_path):
    run_dir = tmp_path / "run"
    report_path = tmp_path / "report.json"
    done = shardwise("train", "--steps", "8", "--eval-every", "4", "--layers", "2", "--block-size", "32",
                     "--run-dir", str(run_dir), "--report", str(report_path), "--no-progress")
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert REPORT_FIELDS <= set(report)
    assert report["strategy"] == "ddp" and report["world_size"] == 2 and report["steps"] == 8
    assert len(report["losses"]) == 8 and report["losses"][-1] < report["losses"][0]
    assert len(report["peak_rss_bytes"]) == len(report["model_state_bytes"]) == len(report["comm_bytes_per_step"]) == 2
    params = 4 * (report["model_state_bytes"][0] // 16)  # 16 bytes per parameter under fp32 Adam, roughly
    assert report["comm_bytes_per_step"][0] == pytest.approx(params, rel=0.01)  # 2(N-1)/N = 1 at N = 2
    assert [v["step"] for v in report["val_losses"]] == [4, 8]
    for name in ("report.json", "loss.png", "checkpoint/LATEST"):
        assert os.path.exists(run_dir / name), name
    sample = shardwise("sample", str(run_dir), "--tokens", "40", "--prompt", "import ")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("import ") and len(sample.stdout) >= 47


@pytest.mark.timeout(300)
def test_pipeline_and_tensor_parallel_train_as_ddp_does(tmp_path):
    common = ["--steps", "4", "--eval-every", "4", "--layers", "2", "--block-size", "32", "--save-every", "0",
              "--no-progress"]
    extra = ["--nproc", "4", "--pp", "2", "--tp", "2", "--tp-vocab", "--microbatches", "4", "--schedule", "gpipe"]
    done = shardwise("train", *common, *extra, "--run-dir", str(tmp_path / "mesh"), "--report", str(tmp_path / "mesh.json"))
    assert done.returncode == 0, done.stderr
    # the same job as DDP on one rank (the single-process run every strategy must equal), in this process
    from shardwise.train import TrainConfig, run_training

    ddp, _ = run_training(TrainConfig.flat(nproc=1, steps=4, eval_every=4, save_every=0, progress=False,
                                           run_dir=str(tmp_path / "ddp"), model=GPTConfig(n_layer=2, block_size=32)))
    reports = {"mesh": json.loads((tmp_path / "mesh.json").read_text()), "ddp": ddp}
    assert reports["mesh"]["mesh"] == {"dp": 1, "pp": 2, "tp": 2, "microbatches": 4, "schedule": "gpipe", "tp_vocab": True}
    assert reports["mesh"]["losses"] == pytest.approx(reports["ddp"]["losses"], rel=1e-4)
    assert [v["loss"] for v in reports["mesh"]["val_losses"]] == pytest.approx([v["loss"] for v in reports["ddp"]["val_losses"]], rel=1e-4)
    sample = shardwise("sample", str(tmp_path / "mesh"), "--tokens", "20", "--prompt", "def ")
    assert sample.returncode == 0 and sample.stdout.startswith("def "), sample.stderr


@pytest.mark.timeout(240)
def test_federate_writes_one_report_entry_per_round(tmp_path):
    done = shardwise("federate", "--clients", "30", "--fraction", "0.2", "--rounds", "3", "--split", "shards:2",
                     "--target-accuracy", "0.2", "--nproc", "2", "--run-dir", str(tmp_path / "fed"), "--no-progress")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "fed" / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    assert {"round", "accuracy", "loss", "bytes", "clients", "dropped"} <= set(report["rounds"][0])
    assert report["rounds_to_target"] is not None and len(report["participation"]) == 30
    assert os.path.exists(tmp_path / "fed" / "rounds.png") and os.path.exists(tmp_path / "fed" / "coordinator.pt")
    assert json.loads(done.stdout)["rounds"] == 3
    again = shardwise("federate", "--rounds", "1", "--run-dir", str(tmp_path / "fed"), "--no-progress")
    assert again.returncode == 2 and "already holds a run" in again.stderr, again.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, message", [
    (["train", "--strategy", "bogus"], "unknown strategy 'bogus'"),
    (["train", "--nproc", "3"], "global batch 32 does not split evenly over 3 training ranks"),
    (["train", "--steps", "-4"], "--steps: expected a whole number of at least 1"),
    (["train", "--global-batch", "1", "--nproc", "2"], "global batch 1 does not split evenly over 2 training ranks"),
    (["train", "--block-size", "2000000"], "fewer than the 2 ranks"),
    (["train", "--wat"], "unrecognized arguments: --wat"),
    (["train", "--pp", "2", "--nproc", "3"], "--nproc 3 is not a multiple of --pp 2 x --tp 1"),
    (["train", "--pp", "2", "--microbatches", "5"], "do not split into 5 equal micro-batches"),
    (["train", "--microbatches", "4"], "add --pp STAGES"),
    (["train", "--tp-vocab"], "--tp-vocab splits the vocabulary over tensor-parallel ranks: add --tp 2"),
    (["train", "--pp", "2", "--precision", "fp16"], "train in fp32 or bf16 (fp16 needs a loss scaler"),
    (["federate", "--split", "dirichlet:-1"], "--split must be iid, dirichlet:ALPHA"),
    (["federate", "--dp-noise", "1.0", "--algorithm", "scaffold"], "SCAFFOLD's control variates are not covered"),
    (["sample", "/no/such/run"], "no checkpoint at /no/such/run"),
    (["run", "-n", "2", "/no/such/script.py"], "no such script"),
])
def test_bad_input_is_one_line_and_status_2(args, message):
    done = shardwise(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
