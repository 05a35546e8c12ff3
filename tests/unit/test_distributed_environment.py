"""A partial or inconsistent launcher environment is an error, not a silent world of 1."""

import subprocess
import sys

import pytest

from shardwise.errors import ConfigError
from shardwise.runtime.env import distributed_environment

FULL = {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_none_set_is_a_single_process():
    assert distributed_environment({}) is None
    assert distributed_environment({"LOCAL_RANK": "0"}) is None


def test_all_set_is_a_job():
    assert distributed_environment(FULL) == (2, 1, "127.0.0.1", 29500)


@pytest.mark.parametrize("missing", sorted(FULL))
def test_each_missing_variable_is_named(missing):
    environ = {k: v for k, v in FULL.items() if k != missing}
    with pytest.raises(ConfigError, match=f"but {missing} not"):
        distributed_environment(environ)


@pytest.mark.parametrize("name,value,words", [
    ("RANK", "2", "not below WORLD_SIZE"), ("RANK", "-1", "at least 0"), ("WORLD_SIZE", "0", "at least 1"),
    ("WORLD_SIZE", "two", "not a whole number"), ("MASTER_PORT", "70000", "not a TCP port"),
])
def test_inconsistent_values(name, value, words):
    with pytest.raises(ConfigError, match=words):
        distributed_environment({**FULL, name: value})


@pytest.mark.timeout(60)
def test_init_refuses_partial_environment():
    env = {"PATH": "/usr/bin:/bin", "WORLD_SIZE": "2", "RANK": "1"}
    done = subprocess.run([sys.executable, "-c", "import shardwise as sw; sw.init()"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and "MASTER_ADDR, MASTER_PORT not" in done.stderr
