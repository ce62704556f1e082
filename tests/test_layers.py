"""Every import goes down: arc_data -> augment -> pretrain -> submission -> the commands and bench/.

A module may import its own layer and the layers below it, never one above; the library never
imports the benchmarks. Checked on the source (imports inside functions included), so a climb that
only runs on some path is caught too."""

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

LAYERS = ["arc_data", "augment", "pretrain", "submission", "bench"]  # bottom first
ENTRY_POINTS = ["make_submission", "evaluate"]


def project_imports(path: Path) -> set[str]:
    """The top-level project packages and entry points a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS + ENTRY_POINTS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_itself_and_the_layers_below(layer):
    allowed = set(LAYERS[:LAYERS.index(layer) + 1])
    climbs = {f"{path.relative_to(ROOT)} imports {name}"
              for path in sorted((ROOT / layer).rglob("*.py")) for name in project_imports(path) - allowed}
    assert not climbs


def test_the_check_sees_a_climb(tmp_path):
    """The check itself can fail: a file that imports from a layer above is seen."""
    climbing = tmp_path / "climbing.py"
    climbing.write_text("def late():\n    from submission.runner import run_submission\n")
    assert project_imports(climbing) == {"submission"}
