"""The import-graph layer check (shardwise.tools.layers): resolver and checks on tiny fake packages,
then the real package."""

from pathlib import Path
from textwrap import dedent

import shardwise
from shardwise.tools import layers
from shardwise.tools.layers import cycles, import_graph, layer_violations


def make_package(root: Path, files: dict[str, str]) -> Path:
    """Write a fake package named `shardwise` under `root`; keys are paths inside it."""
    package = root / "shardwise"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return package


def test_relative_imports_resolve_to_submodules_when_they_exist(tmp_path):
    package = make_package(tmp_path, {
        "comm/__init__.py": "",
        "strategy/__init__.py": "",
        "strategy/prepare.py": "",
        "ps/__init__.py": "from . import heartbeat\nfrom . import VERSION\n",
        "ps/heartbeat.py": "",
        "ps/join.py": "",
        "ps/strategy.py": """\
            from .. import comm, launch
            from . import heartbeat, join
            from ..strategy.prepare import parameter_names
            import os, torch
            from torch import nn
            """,
    })
    graph = import_graph(package)
    assert graph["shardwise.ps.strategy"] == {
        "shardwise.comm", "shardwise",  # `launch` is no module: an attribute of the root package
        "shardwise.ps.heartbeat", "shardwise.ps.join", "shardwise.strategy.prepare",
    }
    # `from . import x` in an __init__ is relative to the package itself; a self-import is dropped
    assert graph["shardwise.ps"] == {"shardwise.ps.heartbeat"}


def test_absolute_imports_make_no_implicit_parent_edges(tmp_path):
    package = make_package(tmp_path, {
        "flat/__init__.py": "",
        "flat/layout.py": "",
        "data/__init__.py": "import shardwise.flat.layout\nfrom shardwise.flat import layout as l\n",
    })
    assert import_graph(package)["shardwise.data"] == {"shardwise.flat.layout"}


def test_deferred_imports_count_and_type_checking_imports_do_not(tmp_path):
    package = make_package(tmp_path, {
        "errors.py": "",
        "checks.py": "",
        "paths.py": "",
        "runtime/__init__.py": "",
        "runtime/env.py": """\
            import typing
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from .. import checks
            if typing.TYPE_CHECKING:
                from .. import paths
            else:
                from .. import errors

            def later():
                from . import launch

            class Thing:
                def method(self):
                    import shardwise.runtime.procs
            """,
        "runtime/launch.py": "",
        "runtime/procs.py": "",
    })
    assert import_graph(package)["shardwise.runtime.env"] == {
        "shardwise.errors", "shardwise.runtime.launch", "shardwise.runtime.procs"}


def test_cycles_are_reported_once_each():
    graph = {
        "shardwise.zero.config": {"shardwise.zero.module", "shardwise.errors"},
        "shardwise.zero.module": {"shardwise.zero.engine"},
        "shardwise.zero.engine": {"shardwise.zero.config", "shardwise.zero.module"},
        "shardwise.errors": set(),
    }
    assert cycles(graph) == [
        ["shardwise.zero.config", "shardwise.zero.module", "shardwise.zero.engine", "shardwise.zero.config"],
        ["shardwise.zero.engine", "shardwise.zero.module", "shardwise.zero.engine"],
    ]
    assert cycles({"shardwise.a": {"shardwise.b"}, "shardwise.b": set()}) == []


def test_cycle_found_through_a_deferred_import(tmp_path):
    package = make_package(tmp_path, {
        "zero/__init__.py": "",
        "zero/config.py": "def build():\n    from .module import M\n",
        "zero/module.py": "from .config import build\n",
    })
    assert cycles(import_graph(package)) == [
        ["shardwise.zero.config", "shardwise.zero.module", "shardwise.zero.config"]]


def test_upward_import_is_a_violation_and_downward_is_not():
    graph = {
        "shardwise.strategy.registry": {"shardwise.ddp.config"},
        "shardwise.ddp.config": {"shardwise.strategy.prepare", "shardwise.errors"},
        "shardwise.strategy.prepare": set(),
        "shardwise.errors": set(),
    }
    assert layer_violations(graph) == [
        "upward: shardwise.strategy.registry (L2) imports shardwise.ddp.config (L3)"]


def test_strategy_families_may_not_import_each_other():
    graph = {
        "shardwise.ps.checkpoint": {"shardwise.zero.state", "shardwise.ps.config"},
        "shardwise.ps.config": set(),
        "shardwise.zero.state": set(),
        "shardwise.train.loop": {"shardwise.bench.timing"},  # same layer, not independent: fine
        "shardwise.bench.timing": set(),
    }
    (found,) = layer_violations(graph)
    assert found.startswith("same layer: shardwise.ps.checkpoint (L3) imports shardwise.zero.state (L3)")


def test_undeclared_module_is_a_violation(tmp_path):
    package = make_package(tmp_path, {"errors.py": "", "gizmo/__init__.py": "", "gizmo/parts.py": "",
                                      "__main__.py": "from . import errors, gizmo\n"})
    assert layer_violations(import_graph(package)) == [
        "undeclared: shardwise.gizmo (top-level name 'gizmo' is in no layer)",
        "undeclared: shardwise.gizmo.parts (top-level name 'gizmo' is in no layer)",
    ]


def test_main_prints_ok_on_a_clean_graph(monkeypatch, capsys):
    monkeypatch.setattr(layers, "import_graph", lambda root: {"shardwise": {"shardwise.errors"},
                                                             "shardwise.errors": set()})
    assert layers.main() == 0
    assert capsys.readouterr().out.startswith("ok: 2 modules, 1 imports, layers errors,")


def test_shardwise_layers_hold():
    graph = import_graph(Path(shardwise.__file__).parent)
    found = layer_violations(graph) + [" -> ".join(cycle) for cycle in cycles(graph)]
    assert not found, "\n".join(found)
