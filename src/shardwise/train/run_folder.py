"""Which folder a training run writes to, chosen so that no run ever overwrites another.

- No `--run-dir`: a new folder OUT/<time>-<strategy>-n<nproc>, made with an exclusive mkdir, so
  two runs started in the same second get two folders (-2, -3, ... on a clash).
- `--run-dir D`: D must be empty or missing, unless `--resume` names D (or D's checkpoint):
  then the run continues D and the earlier report and plot are kept under new names.
- `--resume R` without `--run-dir`: the resumed run gets a folder of its own, like a new run.
"""

from __future__ import annotations

import os
import time

from ..errors import ConfigError
from ..paths import check_folder_writable

KEPT_FILES = ("report.json", "loss.png")


def resumed_run_folder(resume: str) -> str:
    """The run folder that `--resume` names (it may name the run folder or its checkpoint/)."""
    resume = os.path.abspath(resume)
    if os.path.isfile(os.path.join(resume, "LATEST")) and os.path.basename(resume) == "checkpoint":
        return os.path.dirname(resume)
    return resume


def check_run_folder(run_dir: str | None, out_dir: str, resume: str | None) -> bool:
    """Raise ConfigError if the run could not write its folder or would overwrite another run's;
    changes nothing on disk. Returns whether the run continues `run_dir` (the --resume folder)."""
    if run_dir is None:
        check_folder_writable(out_dir, "--out")
        return False
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"--run-dir {run_dir} is a file, not a folder")
    continuing = resume is not None and os.path.realpath(resumed_run_folder(resume)) == os.path.realpath(run_dir)
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not continuing:
        raise ConfigError(f"run folder {run_dir} already holds a run: continue it with --resume {run_dir}, "
                          "or choose another --run-dir")
    check_folder_writable(run_dir, "--run-dir")
    return continuing


def choose_run_folder(run_dir: str | None, out_dir: str, strategy: str, nproc: int, resume: str | None) -> str:
    """Create (or, when resuming it, reopen) the run folder; raise ConfigError rather than overwrite."""
    continuing = check_run_folder(run_dir, out_dir, resume)
    if run_dir is None:
        return _new_folder(out_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy}-n{nproc}")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None
    if continuing:
        keep_earlier_results(run_dir)
    return run_dir


def keep_earlier_results(run_dir: str) -> None:
    """Move report.json and loss.png of an earlier segment aside (report.1.json, loss.1.png, ...)."""
    for name in KEPT_FILES:
        file = os.path.join(run_dir, name)
        if os.path.exists(file):
            stem, ext = os.path.splitext(name)
            index = 1
            while os.path.exists(os.path.join(run_dir, f"{stem}.{index}{ext}")):
                index += 1
            os.rename(file, os.path.join(run_dir, f"{stem}.{index}{ext}"))


def _new_folder(out_dir: str, name: str) -> str:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out folder {out_dir}: {exc.strerror or exc}") from None
    for index in range(1, 1000):
        folder = os.path.join(out_dir, name if index == 1 else f"{name}-{index}")
        try:
            os.mkdir(folder)  # exclusive: fails if another run made it first
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot create a run folder in {out_dir}: {exc.strerror or exc}") from None
    raise ConfigError(f"{out_dir} already holds 999 runs named {name}: choose another --out")
