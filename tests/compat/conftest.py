"""One launch per (strategy, launch group) for the whole session, shared by every compat test.

Tests are parametrized by `strategy` and `case`; collection records which cases each strategy
needs, so the first test of a strategy launches exactly the selected scripts once, and the rest
read its results. A launch that fails (a rank died, a script hung) fails the tests of the
script it failed in and of those after it, with the launcher's message and where ranks were stuck.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # compat_* modules, also for spawned ranks

import compat_harness as harness  # noqa: E402


def pytest_collection_modifyitems(session, config, items):
    wanted = defaultdict(set)
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "slow" in item.keywords and os.environ.get("SHARDWISE_SLOW_TESTS") != "1":
            continue  # skipped (tests/conftest.py): keep its cases out of the shared launches
        if "case" in params and "strategy" in params:
            wanted[params["strategy"]].add(params["case"])
    config.stash[_WANTED] = wanted


_WANTED = pytest.StashKey[dict]()


class CompatRuns:
    """Launch results and single-process references, each computed once per session."""

    def __init__(self, wanted: dict, tmp_path_factory):
        self.wanted = wanted
        self.tmp = tmp_path_factory
        self.launches: dict[tuple[str, str], dict] = {}
        self.references: dict[str, dict] = {}

    def ranks(self, strategy: str, case: str) -> list[dict]:
        """Each training rank's result of `case` under `strategy` (launching if not yet done)."""
        group = harness.launch_group(case)
        key = (strategy, group)
        if key not in self.launches:
            names = {c for c in self.wanted.get(strategy, ()) if harness.launch_group(c) == group} | {case}
            workdir = str(self.tmp.mktemp(f"{strategy}-{group}"))
            self.launches[key] = harness.launch_cases(strategy, sorted(names), workdir)
        outcome = self.launches[key]
        if case not in outcome:  # not selected at collection (a test that needs another's case)
            workdir = str(self.tmp.mktemp(f"{strategy}-{case}"))
            outcome.update(harness.launch_cases(strategy, [case], workdir))
        if isinstance(outcome[case], harness.LaunchFailure):
            pytest.fail(f"{case}/{strategy}: {outcome[case]}", pytrace=False)
        return outcome[case]

    def reference(self, case: str) -> dict:
        if case not in self.references:
            self.references[case] = harness.reference(case, str(self.tmp.mktemp(f"reference-{case}")))
        return self.references[case]


@pytest.fixture(scope="session")
def compat(request, tmp_path_factory) -> CompatRuns:
    return CompatRuns(request.config.stash.get(_WANTED, {}), tmp_path_factory)
