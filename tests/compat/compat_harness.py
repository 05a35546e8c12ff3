"""Run many compat scripts in one launch per strategy, and compare what they return.

Starting ranks is the expensive part (each imports torch), so a launch runs every selected
script in turn. A script that raises on a rank is recorded as `{"error": ...}` for that rank and
the next script goes on; a parameter server's server ranks record None. A script that hangs is
cut off by a per-script watchdog, and the scripts finished before it keep their results.
`nanogpt` ends with `destroy_process_group()`, so it has a launch of its own.
"""

from __future__ import annotations

import faulthandler
import os

import torch

import shardwise as sw
from shardwise.runtime import env, progress

from compat_job import Job, processes_for, strategy_for
from script_nanogpt import nanogpt, nanogpt_compiled
from scripts_single import (checkpointing, compile_aot_eager, compile_inductor, hf_bert_classifier, hf_gpt2_lm,
                            rank0_saves_outside_gathered, reuse)
from scripts_torch_ddp import (bn_cnn, bn_cnn_local_buffers, two_heads_unused, unused_on_one_rank_without_flag,
                               unused_without_flag)

RTOL, ATOL = 1e-5, 1e-6
STRATEGIES = ["ddp", "zero1", "zero2", "zero3", "ps"]

SCRIPTS = {  # in the order a launch runs them; those most likely to hang last
    "reuse": reuse,
    "checkpointing": checkpointing,
    "compile_aot_eager": compile_aot_eager,
    "bn_cnn": bn_cnn,
    "bn_cnn_local_buffers": bn_cnn_local_buffers,
    "hf_gpt2_lm": hf_gpt2_lm,
    "hf_bert_classifier": hf_bert_classifier,
    "nanogpt_compiled": nanogpt_compiled,
    "two_heads_unused": two_heads_unused,
    "unused_without_flag": unused_without_flag,
    "unused_on_one_rank_without_flag": unused_on_one_rank_without_flag,  # alone: run_one_script
    "rank0_saves_outside_gathered": rank0_saves_outside_gathered,  # alone: run_one_script
    "compile_inductor": compile_inductor,
    "nanogpt": nanogpt,
}
LAUNCH_GROUP = {"compile_inductor": "slow", "nanogpt": "nanogpt"}
"""Scripts launched apart from the rest (the others share group "main")."""


def launch_group(case: str) -> str:
    return LAUNCH_GROUP.get(case, "main")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


CASE_TIMEOUT_S = float(os.environ.get("COMPAT_CASE_TIMEOUT_S", "100"))
"""A script still running after this long on a rank is stuck: the rank dumps its stacks and exits."""


def _rank_file(workdir: str, kind: str, case: str, rank: int) -> str:
    return os.path.join(workdir, f"{kind}-{case}-rank{rank}")


def run_cases_on_rank(strategy, names: list[str], workdir: str, device: str = "cpu") -> dict:
    """Each script in turn; each result also saved to `workdir`, so a later hang loses only what follows."""
    torch.set_num_threads(1)
    if device == "cuda":  # parity means fp32 arithmetic
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rank = int(os.environ.get("RANK", "0"))
    results = {}
    for name in names:
        job = Job(strategy=strategy, workdir=workdir, device=device)
        with open(_rank_file(workdir, "hang", name, rank), "w") as hang_report:
            faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True, file=hang_report)
            try:
                results[name] = SCRIPTS[name](job)
            except progress.ServerFinished:
                results[name] = None
            except Exception as exc:  # recorded per script; the launch goes on with the next one
                results[name] = {"error": _one_line(exc)}
            finally:
                faulthandler.cancel_dump_traceback_later()
                progress.run_finishers()
                env.set_training_view(None, None, None)
        torch.save(results[name], _rank_file(workdir, "result", name, rank))
    return results


def launch_cases(strategy_name: str, names: list[str], workdir: str, workers: int = 2, device: str = "cpu",
                 timeout_s: float = 400) -> dict:
    """One launch; per script, the training ranks' results (server ranks dropped), or, for the
    scripts a failed launch did not finish, a `LaunchFailure` saying where it stopped."""
    names = sorted(set(names), key=list(SCRIPTS).index)
    nproc = processes_for(strategy_name, workers)
    try:
        per_rank = sw.launch(run_cases_on_rank, nproc, args=(strategy_for(strategy_name), names, workdir, device),
                             timeout_s=timeout_s)
    except sw.WorkerError as error:
        return _salvage(names, workdir, nproc, error)
    return {name: [r[name] for r in per_rank if r[name] is not None] for name in names}


class LaunchFailure(str):
    """Why a script has no results: the launch died or hung in it, or before it."""


def _salvage(names, workdir, nproc, error) -> dict:
    outcome, stuck = {}, None
    for name in names:
        files = [_rank_file(workdir, "result", name, r) for r in range(nproc)]
        if stuck is None and all(os.path.exists(f) for f in files):
            per_rank = [torch.load(f, weights_only=False) for f in files]
            outcome[name] = [r for r in per_rank if r is not None]
            continue
        if stuck is None:
            stuck = name
            outcome[name] = LaunchFailure(f"launch failed in this script (watchdog: {CASE_TIMEOUT_S:g}s per script): "
                                           f"{error}{_hang_summary(workdir, name, nproc)}")
        else:
            outcome[name] = LaunchFailure(f"not run: the launch failed earlier, in script '{stuck}': {error}")
    return outcome


def _hang_summary(workdir, name, nproc) -> str:
    """The innermost frames each rank was in when the watchdog fired (faulthandler's dump)."""
    lines = []
    for r in range(nproc):
        path = _rank_file(workdir, "hang", name, r)
        text = open(path).read() if os.path.exists(path) else ""
        main = text.split("\n\n")[-1] if "Current thread" in text or "Thread" in text else ""
        frames = [line.strip() for line in main.splitlines() if line.strip().startswith("File")]
        if frames:
            lines.append(f"rank {r} stuck at " + " <- ".join(frames[:3]))
    return ("; " + "; ".join(lines)) if lines else ""


def run_one_script(strategy_name: str, case: str, workdir: str) -> dict | None:
    """One script on this rank, errors raised (so they end the launch, naming the rank)."""
    torch.set_num_threads(1)
    try:
        return SCRIPTS[case](Job(strategy=strategy_for(strategy_name), workdir=workdir))
    except progress.ServerFinished:
        return None


def reference(case: str, workdir: str, device: str = "cpu") -> dict:
    """The script in this process, on the whole global batch, no wrap."""
    return SCRIPTS[case](Job(strategy=None, workdir=workdir, device=device))


# ---------------------------------------------------------------- comparisons (each returns a list of problems)

def errors(label: str, ranks: list[dict]) -> list[str]:
    return [f"{label} rank {r}: {res['error']}" for r, res in enumerate(ranks) if "error" in res]


def close(a, b) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


def compare_state(label: str, got: dict, expected: dict) -> list[str]:
    if set(got) != set(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        return [f"{label}: state keys differ (missing {missing[:3]}, unexpected {extra[:3]})"]
    problems = []
    for key, value in expected.items():
        if got[key].shape != value.shape:
            problems.append(f"{label}: '{key}' shape {tuple(got[key].shape)} != {tuple(value.shape)}")
        elif not torch.allclose(got[key].double(), value.double(), rtol=RTOL, atol=ATOL):
            diff = (got[key].double() - value.double()).abs().max().item()
            problems.append(f"{label}: '{key}' differs (max abs diff {diff:.3g})")
    return problems


def mean_losses(ranks: list[dict], key: str = "losses") -> list[float]:
    return [sum(r[key][s] for r in ranks) / len(ranks) for s in range(len(ranks[0][key]))]


def single_process_problems(label: str, ranks: list[dict], expected: dict) -> list[str]:
    """Rank-mean losses equal the single process's; every rank's full state equals its state."""
    problems = errors(label, ranks)
    if problems:
        return problems
    if not close(mean_losses(ranks), expected["losses"]):
        problems.append(f"{label}: losses {mean_losses(ranks)} != single process {expected['losses']}")
    for r, result in enumerate(ranks):
        problems += compare_state(f"{label} rank {r}", result["state"], expected["state"])
    return problems


def torch_ddp_problems(label: str, ranks: list[dict]) -> list[str]:
    """On every rank, sw's losses and state (parameters and buffers) equal torch DDP's on that rank."""
    problems = errors(label, ranks)
    if problems:
        return problems
    for r, result in enumerate(ranks):
        ours, theirs = result["sw"], result["torch"]
        if not close(ours["losses"], theirs["losses"]):
            problems.append(f"{label} rank {r}: losses {ours['losses']} != torch DDP {theirs['losses']}")
        problems += compare_state(f"{label} rank {r} vs torch DDP", ours["state"], theirs["state"])
    return problems
