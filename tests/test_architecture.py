"""The shape of the code: the compiler core never imports a target, and every table keyed by node
type has a row for every integer node type (exemptions listed with their reason)."""
import ast
import os
import subprocess
import sys

import pytest

import neurocompile
from neurocompile import activity, emulator, intervals, operations
from neurocompile.ir import INT_NODES, IntInput
from neurocompile.target import get_target

CORE = os.path.dirname(neurocompile.__file__)


def _core_modules():
    for folder, _, files in os.walk(CORE):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def _imported(path):
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = os.path.relpath(os.path.dirname(path), os.path.dirname(CORE)).split(os.sep)
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:
                yield from (f"{module}.{a.name}" for a in node.names)
            else:
                yield module


def test_core_imports_no_target_module():
    offenders = [(os.path.relpath(path, CORE), name) for path in _core_modules() for name in _imported(path)
                 if name == "neurocompile.targets" or name.startswith("neurocompile.targets.")
                 or name == "targets" or name.startswith("targets.")]
    assert offenders == []


def test_the_scan_sees_relative_target_imports(tmp_path):
    """The scan above resolves ``from .targets...`` and ``from ..targets import x`` (it would catch them)."""
    names = list(_imported(os.path.join(CORE, "passes", "align.py")))
    assert "neurocompile.target" in names            # ``from ..target import get_target``, resolved


def test_targets_import_without_cycle():
    """Each Loihi 2 module imports first, in a fresh interpreter (a cycle would fail one of them)."""
    for module in ("neurocompile.targets.loihi2.target", "neurocompile.targets.loihi2.plan",
                   "neurocompile.target", "neurocompile.arith"):
        res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]


LOWER_TABLE = "targets/loihi2/lowering.LOWER"          # the lowering imports Lava: a Lava test


def _lowering_table() -> set:
    """LOWER's node types, read in a fresh interpreter: importing Lava sets multiprocessing's start
    method, which fails in a test session where something set it first."""
    code = "from neurocompile.targets.loihi2.lowering import LOWER; print(' '.join(c.__name__ for c in LOWER))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return {INT_NODES[n] for n in res.stdout.split()}


def _tables(table):
    from neurocompile.targets.loihi2 import plan
    if table == LOWER_TABLE:
        return _lowering_table(), {}
    target = get_target()
    return {
        "intervals.INTERVAL": (set(intervals.INTERVAL), {}),
        "operations.OPERATION": (set(operations.OPERATION) | set(operations.NO_OPERATION),
                                 {}),
        "emulator.EMULATE": (set(emulator.EMULATE), {}),
        "activity.ACTIVITY": (set(activity.ACTIVITY) | set(activity.NO_ACTIVITY), {}),
        "activity.FLOAT_MACS": (set(activity.FLOAT_MACS), {}),
        # COMPILED overrides EMULATE where a compiled kernel exists and falls back to it elsewhere
        "emulator.COMPILED": (set(emulator.COMPILED), {}),
        "targets/loihi2/plan.PLACE": (set(plan.PLACE), {}),
        "loihi2 target lowerings": ({INT_NODES[n] for n in target.lowerings}, {}),
    }[table]


@pytest.mark.parametrize("table", sorted(["intervals.INTERVAL", "operations.OPERATION", "emulator.EMULATE",
                                          "activity.ACTIVITY", "activity.FLOAT_MACS",
                                          "emulator.COMPILED", "targets/loihi2/plan.PLACE", "loihi2 target lowerings"])
                         + [pytest.param(LOWER_TABLE, marks=pytest.mark.lava)])
def test_every_table_covers_every_node_type(table):
    covered, exempt = _tables(table)
    missing = sorted(n for n, cls in INT_NODES.items() if cls not in covered and cls not in exempt)
    extra = sorted(getattr(c, "__name__", str(c)) for c in covered - set(INT_NODES.values()))
    assert (missing, extra) == ([], [])


def test_input_node_has_no_operation_row_but_a_reason():
    assert IntInput not in operations.OPERATION and operations.NO_OPERATION[IntInput]
    assert IntInput not in activity.ACTIVITY and activity.NO_ACTIVITY[IntInput]


def test_plan_rows_name_the_targets_lowerings():
    """Every lowering the target declares for a node type has a placement rule in the plan's row."""
    from neurocompile.targets.loihi2 import plan
    target = get_target()
    for name, lowerings in target.lowerings.items():
        assert set(plan.PLACE[INT_NODES[name]]) == set(lowerings), name


def test_target_refuses_another_arithmetic(monkeypatch):
    import dataclasses

    from neurocompile import arith, target as target_mod
    other = dataclasses.replace(get_target(), arithmetic=dataclasses.replace(arith.ARITHMETIC, lif_act_shift=5))
    monkeypatch.setattr(target_mod, "_resolve", lambda path: other)
    with pytest.raises(ValueError, match="not the rule"):
        target_mod.get_target("loihi2")
