"""make_submission's bad input and odd paths: one line, the right exit code, no traceback, and an
existing output file left as it was; and the summary of tasks that failed."""

import os
from pathlib import Path

import orjson
import pytest
import torch

import make_submission
from arc_data import load_kaggle
from arc_data.synthetic import synthetic_tasks
from pretrain.config import tiny
from pretrain.export import export_network
from pretrain.model import build_model
from submission.config import cpu
from submission.candidates import read_candidates
from submission.finetune import TaskOutcome
from submission.runner import RunSummary
from submission.writer import read_submission, validate_submission
from tests.helpers import call_main, run_cli, write_kaggle_files

OLD = b'{"old": "file"}'


@pytest.fixture
def challenges(tmp_path) -> Path:
    return write_kaggle_files(tmp_path, synthetic_tasks(3, seed=4))[0]


@pytest.fixture
def old_out(tmp_path) -> Path:
    out = tmp_path / "submission.json"
    out.write_bytes(OLD)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    export_network(build_model(tiny()), torch.zeros(64), folder)
    return folder


def run_main(capsys, *args) -> tuple[int, str, str]:
    return call_main(make_submission.main, capsys, "--quiet", *args)


def assert_one_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("flag, value, problem", [
    ("--time-limit", 0, "--time-limit must be a positive number of seconds, got 0"),
    ("--time-limit", -5, "got -5"),
    ("--time-limit", "nan", "got nan"),
    ("--workers", 0, "--workers must be at least 1, got 0"),
    ("--limit", 0, "--limit must be at least 1, got 0"),
    ("--shard-tasks", 0, "--shard-tasks must be at least 1, got 0"),
    ("--shard-tasks", -2, "got -2"),
])
def test_numbers_that_would_run_nothing_are_one_line(capsys, challenges, old_out, flag, value, problem):
    code, out, err = run_main(capsys, "--challenges", challenges, "--out", old_out, flag, value)
    assert code == 2
    assert_one_line(err, problem)
    assert out == "" and old_out.read_bytes() == OLD


@pytest.mark.parametrize("setting, problem", [
    ("bogus=1", "--finetune: bogus is not a field of the fine-tuning preset"),
    ("stop_when_fitted=-1", "--finetune: stop_when_fitted must not be negative, got -1"),
    ("lr", "--finetune 'lr': expected KEY=VALUE"),
])
def test_a_bad_finetune_setting_is_one_line(capsys, challenges, old_out, setting, problem):
    code, out, err = run_main(capsys, "--challenges", challenges, "--out", old_out, "--finetune", setting)
    assert code == 2
    assert_one_line(err, problem)
    assert out == "" and old_out.read_bytes() == OLD


def test_finetune_settings_change_the_preset_the_run_gets(capsys, challenges, tmp_path, monkeypatch):
    configs = []
    fake_run(monkeypatch, lambda tasks: [outcome(t) for t in tasks], configs)
    code, _, err = run_main(capsys, "--challenges", challenges, "--out", tmp_path / "s.json",
                            "--finetune", "stop_when_fitted=5", "lr=2e-3", "--steps", "7")
    assert code == 0, err
    assert (configs[0].stop_when_fitted, configs[0].lr, configs[0].steps, configs[0].batch) == (5, 2e-3, 7, cpu().batch)


def test_out_in_a_missing_folder_is_created(capsys, challenges, tmp_path, monkeypatch):
    fake_run(monkeypatch, lambda tasks: [])
    out = tmp_path / "new" / "folder" / "submission.json"
    code, _, err = run_main(capsys, "--challenges", challenges, "--out", out)
    assert code == 0, err
    validate_submission(read_submission(out), load_kaggle(challenges))


@pytest.mark.parametrize("kind", ["fifo", "directory", "link-to-fifo"])
def test_out_that_is_not_a_regular_file_is_refused(capsys, challenges, tmp_path, kind):
    special = tmp_path / "special"
    os.mkfifo(special) if kind != "directory" else special.mkdir()
    out = special
    if kind == "link-to-fifo":
        out = tmp_path / "link.json"
        out.symlink_to(special)
    mode = os.stat(special).st_mode
    code, _, err = run_main(capsys, "--challenges", challenges, "--out", out)
    assert code == 2
    assert_one_line(err, str(out), "not a regular file")
    assert os.stat(special).st_mode == mode
    assert kind != "link-to-fifo" or out.is_symlink()


def test_out_through_a_symlink_replaces_the_target(capsys, challenges, tmp_path, old_out, monkeypatch):
    fake_run(monkeypatch, lambda tasks: [])
    link = tmp_path / "link.json"
    link.symlink_to(old_out)
    code, _, err = run_main(capsys, "--challenges", challenges, "--out", link)
    assert code == 0, err
    assert link.is_symlink()
    validate_submission(read_submission(old_out), load_kaggle(challenges))


def broken_config(folder: Path, exported: Path, change) -> Path:
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes())
    config = orjson.loads((exported / "model.json").read_bytes())
    (folder / "model.json").write_bytes(orjson.dumps(change(config)))
    return folder


@pytest.mark.parametrize("change, problem", [
    (lambda c: {k: v for k, v in c.items() if k != "arch"}, "field 'arch' is missing"),
    (lambda c: {**c, "hidden": "64"}, "field 'hidden' is '64', not int"),
    (lambda c: {**c, "layers": 2.5}, "field 'layers' is 2.5, not int"),
    (lambda c: {**c, "T": True}, "field 'T' is True, not int"),
    (lambda c: {**c, "arch": "gpt"}, "arch must be one of"),
    (lambda c: {**c, "colour": 3}, "unknown ModelConfig fields: ['colour']"),
    (lambda c: [c], "is not a JSON object"),
])
def test_a_bad_model_json_is_one_line_naming_file_and_field(capsys, challenges, tmp_path, old_out, exported,
                                                            change, problem):
    checkpoint = broken_config(tmp_path / "bad-export", exported, change)
    code, _, err = run_main(capsys, "--challenges", challenges, "--out", old_out, "--checkpoint", checkpoint)
    assert code == 2
    assert_one_line(err, str(checkpoint / "model.json"), problem)
    assert old_out.read_bytes() == OLD


def test_a_missing_checkpoint_is_one_line(capsys, challenges, tmp_path, old_out):
    code, _, err = run_main(capsys, "--challenges", challenges, "--out", old_out, "--checkpoint", tmp_path / "nope")
    assert code == 2
    assert_one_line(err, "no such checkpoint")
    assert old_out.read_bytes() == OLD


@pytest.mark.parametrize("how", ["main", pytest.param("command", marks=pytest.mark.cli)])
def test_truncated_weights_are_one_line_and_leave_the_output_as_it_was(capsys, challenges, tmp_path, old_out, exported,
                                                                       how):
    checkpoint = tmp_path / "truncated"
    checkpoint.mkdir()
    (checkpoint / "model.json").write_bytes((exported / "model.json").read_bytes())
    weights = (exported / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    args = ["--challenges", challenges, "--out", old_out, "--checkpoint", checkpoint]
    if how == "main":
        code, _, err = run_main(capsys, *args)
    else:
        result = run_cli(["make_submission.py", "--quiet", *args], timeout=120)
        code, err = result.returncode, result.stderr
    assert code == 2
    assert_one_line(err, "model.safetensors", "cannot be read")
    assert old_out.read_bytes() == OLD


# ---------------------------------------------------------------------------------------- failed tasks

def fake_run(monkeypatch, outcomes_for, configs: list | None = None):
    """Replace the model run: ``outcomes_for(tasks)`` gives the outcomes; the file keeps its pre-fill.
    Each run's fine-tuning config is appended to ``configs``."""
    def run_submission(tasks, network, config, out, time_limit, workers=None, quiet=False, on_outcome=None):
        if configs is not None:
            configs.append(config)
        outcomes = {}
        for reported in outcomes_for(tasks):  # one by one, as a run's tasks report
            outcomes[reported.task_id] = reported
            if on_outcome is not None:
                on_outcome(reported)
        return RunSummary(outcomes=outcomes, unfinished=[t.id for t in tasks if t.id not in outcomes])
    monkeypatch.setattr(make_submission, "run_submission", run_submission)
    monkeypatch.setattr(make_submission, "load_network", lambda checkpoint, *official, **seed: None)


def outcome(task, note="ok"):
    return TaskOutcome(task.id, [[] for _ in task.test_inputs], note=note, failed=note != "ok")


def test_failed_tasks_are_counted_apart_with_their_notes(capsys, challenges, tmp_path, monkeypatch):
    fake_run(monkeypatch, lambda tasks: [outcome(tasks[0]), outcome(tasks[1], "failed: ValueError: bad\nshape"),
                                         outcome(tasks[2], "out of GPU memory")])
    out = tmp_path / "submission.json"
    code, stdout, err = run_main(capsys, "--challenges", challenges, "--out", out)
    assert code == 0, err
    assert "1 tasks predicted, 0 left with fallback attempts, 2 failed" in stdout
    tasks = load_kaggle(challenges)
    assert f"  task {tasks[1].id}: failed: ValueError: bad shape\n" in stdout
    assert f"  task {tasks[2].id}: out of GPU memory\n" in stdout


def test_every_task_failed_exits_non_zero_with_a_valid_file(capsys, tmp_path, monkeypatch):
    challenges, _ = write_kaggle_files(tmp_path, synthetic_tasks(25, seed=6))
    fake_run(monkeypatch, lambda tasks: [outcome(t, f"failed: RuntimeError: number {i}") for i, t in enumerate(tasks)])
    out = tmp_path / "submission.json"
    code, stdout, err = run_main(capsys, "--challenges", challenges, "--out", out)
    assert code == 1
    assert "0 tasks predicted, 0 left with fallback attempts, 25 failed" in stdout
    assert stdout.count("failed: RuntimeError") == 20 and "... and 5 more failed tasks" in stdout
    assert "every task failed" in err and "Traceback" not in err
    validate_submission(read_submission(out), load_kaggle(challenges))


def test_the_candidates_of_each_task_reach_their_file_as_it_reports(capsys, challenges, tmp_path, monkeypatch):
    """The second task's report finds the first task's candidates already in the file: a run stopped
    part-way keeps what its finished tasks found."""
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_bytes(b"an older run's file\n")
    seen_on_disk = []

    def with_evidence(task):
        seen_on_disk.append(len(read_candidates([candidates])))
        grid = [[1]]
        return TaskOutcome(task.id, [[grid] for _ in task.test_inputs], evidence=[
            [{"grid": grid, "votes": 1, "first_seen": 0, "confidences": [0.5], "view_log_probs": [-1.0]}]
            for _ in task.test_inputs])

    fake_run(monkeypatch, lambda tasks: (with_evidence(t) for t in tasks[:2]))
    code, stdout, err = run_main(capsys, "--challenges", challenges, "--out", tmp_path / "out.json",
                                 "--candidates", candidates)
    assert code == 0, err
    assert "wrote the candidates of 2 tasks" in stdout and seen_on_disk == [0, 1]
    tasks = load_kaggle(challenges)
    assert [r["task"] for r in read_candidates([candidates])] == [t.id for t in tasks[:2]]
