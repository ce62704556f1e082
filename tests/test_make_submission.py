"""make_submission.py as a user runs it: time limits, a kill mid-run, workers, --max-side with evaluate.py.
These start the command in a subprocess (marker ``cli``), except the few checks that run its ``main``."""

import os
import signal
import time
from pathlib import Path

import orjson
import pytest

import make_submission as command
from arc_data import load_bundled, load_kaggle
from arc_data.synthetic import synthetic_tasks
from submission.writer import validate_submission
from tests.helpers import call_main, run_cli, start_cli
from tests.helpers import write_kaggle_files as write_challenges


def make_submission(*args, **kwargs):
    return start_cli(["make_submission.py", "--quiet", *args], **kwargs)


def assert_valid(path, challenges):
    validate_submission(orjson.loads(Path(path).read_bytes()), load_kaggle(challenges))


@pytest.mark.cli
def test_a_one_second_budget_still_writes_a_valid_file(tmp_path):
    challenges, _ = write_challenges(tmp_path, load_bundled("arc-agi-2", "eval")[:5])
    out = tmp_path / "submission.json"
    process = make_submission("--challenges", challenges, "--out", out, "--time-limit", 1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert_valid(out, challenges)


@pytest.mark.cli
def test_time_limit_is_honoured(tmp_path):
    challenges, _ = write_challenges(tmp_path, load_bundled("arc-agi-2", "eval")[:40])
    out = tmp_path / "submission.json"
    started = time.monotonic()
    process = make_submission("--challenges", challenges, "--out", out, "--time-limit", 25)
    stdout, stderr = process.communicate(timeout=180)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, stderr
    assert elapsed < 25 + 10, f"took {elapsed:.1f} s for a 25 s limit"  # interpreter start and imports included
    assert_valid(out, challenges)
    assert "left with fallback attempts" in stdout


@pytest.mark.cli
def test_a_kill_mid_run_leaves_a_valid_file(tmp_path):
    challenges, _ = write_challenges(tmp_path, synthetic_tasks(30, seed=3))
    out = tmp_path / "submission.json"
    process = make_submission("--challenges", challenges, "--out", out, "--time-limit", 300,
                              start_new_session=True)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(4)  # into the fine-tuning of the first tasks
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert_valid(out, challenges)


# The command's early errors, checked through its ``main`` (fast) and as a command in a subprocess.
HOW = ["main", pytest.param("command", marks=pytest.mark.cli)]


def run(how: str, capsys, *args) -> tuple[int, str]:
    """make_submission with ``args``: (exit code, stderr)."""
    if how == "main":
        code, _, stderr = call_main(command.main, capsys, "--quiet", *args)
        return code, stderr
    process = make_submission(*args)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize("how", HOW)
def test_bad_input_is_one_line_and_leaves_the_old_file(tmp_path, capsys, how):
    out = tmp_path / "submission.json"
    out.write_text('{"old": "file"}')
    bad = tmp_path / "challenges.json"
    bad.write_bytes(orjson.dumps({"t1": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]}}))
    code, stderr = run(how, capsys, "--challenges", bad, "--out", out)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0 and "task t1" in stderr and "ragged" in stderr
    assert out.read_text() == '{"old": "file"}'


@pytest.mark.slow
@pytest.mark.cli
def test_one_and_two_workers_agree(tmp_path):
    challenges, _ = write_challenges(tmp_path, synthetic_tasks(4, seed=5))
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.json"
        process = make_submission("--challenges", challenges, "--out", out, "--time-limit", 600, "--workers", workers,
                                  "--steps", 40)
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
        outputs.append(orjson.loads(out.read_bytes()))
    assert outputs[0] == outputs[1]


@pytest.mark.cli
def test_max_side_selects_the_small_tasks_and_evaluate_scores_the_same(tmp_path):
    out = tmp_path / "submission.json"
    process = make_submission("--dataset", "arc-agi-1", "--split", "eval", "--max-side", 8, "--limit", 3,
                              "--time-limit", 10, "--out", out)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert any(line.startswith("3 tasks,") for line in stdout.splitlines())
    chosen = [t for t in load_bundled("arc-agi-1", "eval") if t.max_side <= 8][:3]
    assert sorted(orjson.loads(out.read_bytes())) == sorted(t.id for t in chosen)
    scored = run_cli(["evaluate.py", out, "--dataset", "arc-agi-1", "--max-side", "8", "--limit", "3", "--json"],
                     timeout=60)
    assert scored.returncode == 0, scored.stderr
    assert [t["task_id"] for t in orjson.loads(scored.stdout)["per_task"]] == [t.id for t in chosen]
    everything = run_cli(["evaluate.py", out, "--dataset", "arc-agi-1", "--max-side", "8"], timeout=60)
    assert everything.returncode == 2 and "is missing from the submission (18 tasks missing in all)" in everything.stderr


@pytest.mark.cli
def test_a_task_alone_on_two_workers_gets_no_more_than_the_time_left(tmp_path):
    """The time-driven cpu preset spends its whole share: a share larger than the time left would be
    killed at the deadline."""
    challenges, _ = write_challenges(tmp_path, synthetic_tasks(1, seed=9))
    out = tmp_path / "submission.json"
    process = make_submission("--challenges", challenges, "--out", out, "--time-limit", 20, "--workers", 2)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "1 tasks predicted, 0 left with fallback attempts" in stdout


@pytest.mark.parametrize("how", HOW)
def test_a_max_side_no_task_fits_is_one_line(tmp_path, capsys, how):
    code, stderr = run(how, capsys, "--dataset", "arc-agi-2", "--max-side", 3, "--out", tmp_path / "s.json")
    assert code == 2 and stderr.strip() == "error: no task fits 3 x 3"
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("how", HOW)
def test_a_checkpoint_that_is_not_an_export_is_one_line(tmp_path, capsys, how):
    challenges, _ = write_challenges(tmp_path, synthetic_tasks(2, seed=3))
    code, stderr = run(how, capsys, "--challenges", challenges, "--out", tmp_path / "s.json", "--checkpoint", tmp_path)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0 and "model.json" in stderr


@pytest.mark.cli
def test_joint_fine_tuning_of_shards_predicts_every_task(tmp_path):
    challenges, _ = write_challenges(tmp_path, synthetic_tasks(4, seed=7))
    out = tmp_path / "submission.json"
    process = make_submission("--challenges", challenges, "--out", out, "--time-limit", 60, "--steps", 5, "--shard-tasks", 2,
                              "--workers", 1)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert "4 tasks predicted, 0 left with fallback attempts" in stdout
    assert_valid(out, challenges)


def test_candidate_report_counts_the_rank_of_the_truth():
    from make_submission import candidate_report
    from submission.finetune import TaskOutcome
    from submission.runner import RunSummary
    task = synthetic_tasks(1, seed=2, families=("tile",))[0]
    wrong = [[0]]
    summary = RunSummary(outcomes={task.id: TaskOutcome(task.id, [[wrong, task.test_outputs[0].tolist(), [[1]]]])})
    report = candidate_report([task], summary)
    assert "pass@1 0.00%" in report and "pass@2 100.00%" in report and "pass@3 100.00%" in report
    assert "pass@1 0.00%" in candidate_report([task], RunSummary())
