"""Suite-wide options: the slow tier runs only when asked for."""

import os

import pytest

SLOW_ENV = "SHARDWISE_SLOW_TESTS"


def pytest_configure(config):
    config.addinivalue_line("markers", f"slow: optional tier (torch.compile with inductor, smoke runs of the "
                                       f"benchmarks/ scripts); run with {SLOW_ENV}=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get(SLOW_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow tier (inductor compiles C++ on first use; benchmarks/ script smoke "
                                   f"runs, whose library paths the suite tests directly); set {SLOW_ENV}=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
