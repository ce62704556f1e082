"""Kaggle packaging: the build's files and metadata, the notebook, bad input, and a full offline rehearsal."""

import time
from pathlib import Path
from zipfile import ZipFile

import orjson
import pytest
import torch

from arc_data import load_bundled, load_kaggle
from pretrain.config import tiny
from pretrain.export import export_network
from pretrain.model import build_model
from submission import kaggle, kaggle_env
from submission.kaggle import (BuildConfig, Layout, PackagingError, RehearsalConfig, build, code_cell_sources,
                               main, rehearse)
from submission.writer import read_submission, validate_submission

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
    assert relative_files(built.wheels) == {kaggle.WHEELHOUSE_MARKER, "dataset-metadata.json"}  # --no-wheels
    assert relative_files(built.notebook) == {"kernel-metadata.json", "submission.ipynb"}
    code = relative_files(built.code)
    assert {"pyproject.toml", "requirements.txt", "README.md", "dataset-metadata.json", "make_submission.py",
            "evaluate.py", "submission/kaggle_env.py", "pretrain/export.py", "arc_trm-0.1.0-py3-none-any.whl"} <= code


def test_code_dataset_holds_only_the_project(built):
    tops = {path.split("/")[0] for path in relative_files(built.code)}
    assert tops == {"arc_data", "augment", "pretrain", "submission", "evaluate.py", "make_submission.py",
                    "pyproject.toml", "requirements.txt", "README.md", "dataset-metadata.json",
                    "arc_trm-0.1.0-py3-none-any.whl"}
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
    assert metadata["competition_sources"] == ["arc-prize-2025"]
    assert metadata["dataset_sources"] == DATASETS


def test_notebook_is_three_code_cells(built):
    notebook = read_json(built.notebook / "submission.ipynb")
    assert notebook["nbformat"] == 4
    assert [cell["cell_type"] for cell in notebook["cells"]] == ["code"] * 3
    sources = code_cell_sources(built.notebook / "submission.ipynb")
    for index, source in enumerate(sources):
        compile(source, f"cell {index + 1}", "exec")
    install, run, check = sources
    assert "--no-index" in install and "--find-links" in install and "NUMBA_CACHE_DIR" in install
    assert kaggle_env.INPUT_ENV in install and kaggle_env.WORKING_ENV in install
    assert all(f"'{name}'" in install for name in kaggle.wheel_names())
    assert '"-m", "make_submission", "--checkpoint"' in run
    assert "validate_submission" in check and "find_test_challenges" in check


def test_wheel_packages_are_explicit():
    requirements = Path(__file__).resolve().parents[1].joinpath("requirements.txt").read_text()
    names = kaggle.wheel_names()
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


def test_kaggle_paths_come_from_the_environment(tmp_path):
    env = {kaggle_env.INPUT_ENV: str(tmp_path / "in"), kaggle_env.WORKING_ENV: str(tmp_path / "work")}
    paths = kaggle_env.kaggle_paths(env)
    assert paths.input_root == tmp_path / "in"
    assert paths.submission == tmp_path / "work" / "submission.json"
    assert kaggle_env.kaggle_paths({}).input_root == Path("/kaggle/input")
    assert kaggle_env.is_kaggle({kaggle_env.RUN_TYPE_ENV: "Batch"})


@pytest.mark.parametrize("value, rerun", [(None, False), ("", False), ("False", False), ("True", True), ("1", True)])
def test_competition_rerun_flag(value, rerun):
    env = {} if value is None else {kaggle_env.RERUN_ENV: value}
    assert kaggle_env.is_competition_rerun(env) is rerun


def test_find_test_challenges_prefers_the_shallowest(tmp_path):
    assert kaggle_env.find_test_challenges(tmp_path / "absent") is None
    assert kaggle_env.find_test_challenges(tmp_path) is None
    deep = tmp_path / "my-dataset" / "copy" / kaggle_env.TEST_CHALLENGES
    deep.parent.mkdir(parents=True)
    deep.write_text("{}")
    assert kaggle_env.find_test_challenges(tmp_path) == deep
    competition = tmp_path / "arc-prize-2025" / kaggle_env.TEST_CHALLENGES
    competition.parent.mkdir()
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
                         source=kaggle.default_source(), user=USER)
    try:
        return build(config)
    except PackagingError as error:
        if "downloading the wheels" in str(error):
            pytest.skip(f"cannot download the wheelhouse here: {error}")
        raise


@pytest.mark.slow
def test_rehearsal_writes_a_valid_submission(built_with_wheels, tmp_path):
    challenges = tmp_path / "arc-agi_test_challenges.json"
    task_ids = write_kaggle_challenges(challenges, 3)
    started = time.monotonic()
    rehearse(RehearsalConfig(build_dir=built_with_wheels.root, challenges=challenges, keep=True,
                             workdir=tmp_path / "kaggle", time_limit=30))
    print(f"rehearsal took {time.monotonic() - started:.0f} s")
    submission = read_submission(tmp_path / "kaggle" / "working" / "submission.json")
    assert sorted(submission) == sorted(task_ids)
    validate_submission(submission, load_kaggle(challenges))


@pytest.mark.slow
def test_rehearsal_catches_a_missing_wheel(built_with_wheels, tmp_path):
    broken = tmp_path / "broken"
    for name, folder in (("code", built_with_wheels.code), ("weights", built_with_wheels.weights),
                         ("wheels", built_with_wheels.wheels), ("notebook", built_with_wheels.notebook)):
        (broken / name).mkdir(parents=True)
        for file in folder.iterdir():
            if file.is_file() and not file.name.startswith("einops"):  # the wheel stands for the code
                (broken / name / file.name).write_bytes(file.read_bytes())
    challenges = tmp_path / "challenges.json"
    write_kaggle_challenges(challenges, 1)
    with pytest.raises(PackagingError, match="einops"):
        rehearse(RehearsalConfig(build_dir=broken, challenges=challenges, time_limit=10))
