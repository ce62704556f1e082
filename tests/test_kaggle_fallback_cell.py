"""The notebook's first cell, submission/kaggle/fallback_cell.py, run as a program of its own in
folders laid out like Kaggle's (test_kaggle.py checks that the built notebook holds this very file)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain import kaggle_facts
from submission import kaggle_env
from submission.kaggle import notebook
from submission.kaggle.layout import FAILED_MARK

CELL = notebook.FALLBACK_CELL_FILE
# A task with two test inputs, and one whose test input is no grid (the cell answers [[0]] for it).
CHALLENGES = {
    "00000001": {"train": [{"input": [[1, 2]], "output": [[2, 1]]}],
                 "test": [{"input": [[3, 4], [5, 6]]}, {"input": [[7]]}]},
    "00000002": {"train": [{"input": [[0]], "output": [[1]]}], "test": [{"input": [[1] * 31]}]},
}


def kaggle_folders(root: Path, mount: str | None) -> tuple[Path, Path]:
    """<root>/input with the competition mounted at ``mount`` (none if None) and a dataset carrying an
    empty copy of the test file, which must never win; <root>/working, empty. Returns both."""
    inputs, working = root / "input", root / "working"
    decoy = inputs / "some-dataset" / "copy" / kaggle_facts.TEST_CHALLENGES
    decoy.parent.mkdir(parents=True)
    decoy.write_text("{}")
    if mount is not None:
        challenges = inputs / mount / kaggle_facts.TEST_CHALLENGES
        challenges.parent.mkdir(parents=True)
        challenges.write_text(json.dumps(CHALLENGES))
    working.mkdir()
    return inputs, working


def run_cell(root: Path) -> subprocess.CompletedProcess:
    """The file under Python in isolated mode (no project on the path, no user site), from an empty
    folder, without nvidia-smi on PATH, its temporary folders inside ``root``."""
    (root / "bin").mkdir()
    (root / "tmp").mkdir()
    env = {kaggle_env.INPUT_ENV: str(root / "input"), kaggle_env.WORKING_ENV: str(root / "working"),
           "PATH": str(root / "bin"), "TMPDIR": str(root / "tmp")}
    return subprocess.run([sys.executable, "-I", str(CELL)], cwd=root / "bin", env=env, capture_output=True,
                          text=True, timeout=60)


def is_grid(value) -> bool:
    return (isinstance(value, list) and 1 <= len(value) <= 30 and all(isinstance(row, list) for row in value)
            and all(len(row) == len(value[0]) for row in value) and 1 <= len(value[0]) <= 30
            and all(type(cell) is int and 0 <= cell <= 9 for row in value for cell in row))


@pytest.mark.parametrize("mount", ["competitions/arc-prize-2026-arc-agi-2", "arc-prize-2025"])
def test_the_cell_writes_a_valid_fallback_for_every_task_and_test_input(tmp_path, mount):
    _, working = kaggle_folders(tmp_path, mount)
    (working / kaggle_facts.SUBMISSION_FILE).write_text("left over")  # replaced: the cell writes its own
    result = run_cell(tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert FAILED_MARK not in result.stdout and "GPUs: 0\n" in result.stdout
    assert f"wrote the fallback {working / kaggle_facts.SUBMISSION_FILE}: 2 tasks" in result.stdout
    submission = json.loads((working / kaggle_facts.SUBMISSION_FILE).read_text())
    assert sorted(submission) == sorted(CHALLENGES)
    for task_id, task in CHALLENGES.items():
        assert len(submission[task_id]) == len(task["test"])
        for entry in submission[task_id]:
            assert set(entry) == {"attempt_1", "attempt_2"} and is_grid(entry["attempt_1"]) and is_grid(entry["attempt_2"])
    assert submission["00000001"] == [{"attempt_1": [[3, 4], [5, 6]], "attempt_2": [[0]]},
                                      {"attempt_1": [[7]], "attempt_2": [[0]]}]
    assert submission["00000002"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]  # its input is no grid
    assert sorted(os.listdir(working)) == [kaggle_facts.SUBMISSION_FILE]  # no temporary file, no numba cache


def test_without_the_competition_the_cell_reports_and_ends_normally(tmp_path):
    _, working = kaggle_folders(tmp_path, None)
    (tmp_path / "input" / "some-dataset" / "copy" / kaggle_facts.TEST_CHALLENGES).unlink()
    result = run_cell(tmp_path)
    assert result.returncode == 0
    assert f"{FAILED_MARK}: fallback submission: FileNotFoundError: no {kaggle_facts.TEST_CHALLENGES}" in result.stdout
    assert not list(working.iterdir())


def test_the_cell_imports_the_standard_library_alone():
    tree = ast.parse(CELL.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and imported <= sys.stdlib_module_names


def test_the_files_settings_are_the_projects():
    tree = ast.parse(CELL.read_text())
    [assignment] = [node for node in tree.body if isinstance(node, ast.Assign)
                    and [getattr(target, "id", None) for target in node.targets] == ["SETTINGS"]]
    assert ast.literal_eval(assignment.value) == notebook.fallback_settings()


def test_the_build_writes_the_settings_and_nothing_else(monkeypatch):
    monkeypatch.setattr(kaggle_facts, "SUBMISSION_FILE", 'odd "name"\n.json')
    cell = notebook.fallback_cell()
    changed = [(old, new) for old, new in zip(CELL.read_text().splitlines(), cell.splitlines()) if old != new]
    assert changed == [('    "submission_file": "submission.json",', '    "submission_file": "odd \\"name\\"\\n.json",')]
    namespace: dict = {}
    exec(compile(cell, "cell 1", "exec"), namespace)  # not as __main__: defines the names, writes nothing
    assert namespace["SUBMISSION"].name == 'odd "name"\n.json'


def test_settings_must_be_strings():
    with pytest.raises(TypeError, match="string or a list of strings"):
        notebook.settings_source({"gpus": 4})
    with pytest.raises(ValueError, match="2 top-level SETTINGS"):
        notebook.settings_span("SETTINGS = {}\nSETTINGS = {}\n")
