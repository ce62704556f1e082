"""The picture report: a PNG per task and an index.html, failed tasks first; evaluate.py --report."""

from pathlib import Path

import matplotlib.image
import pytest

from arc_data.sources import load_bundled
from submission.report import write_report
from submission.scoring import score_submission
from submission.writer import prefill, set_attempts, write_submission
from tests.helpers import write_kaggle_files

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def case():
    """Three eval tasks: the middle one solved (attempt = truth), the others missed by one cell."""
    tasks = load_bundled("arc-agi-2", "eval")[:3]
    submission = prefill(tasks)
    for number, task in enumerate(tasks):
        for index, truth in enumerate(task.test_outputs):
            guess = truth.copy()
            if number != 1:
                guess[0, 0] = (guess[0, 0] + 1) % 10
            set_attempts(submission, task.id, index, [guess])
    solved, failed = tasks[1].id, [tasks[0].id, tasks[2].id]
    return tasks, submission, solved, failed


def assert_report(folder: Path, tasks, solved: str, failed: list[str]) -> None:
    for task in tasks:
        png = folder / f"{task.id}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100
    page = (folder / "index.html").read_text(encoding="utf-8")
    places = {task.id: page.find(f'src="{task.id}.png"') for task in tasks}
    assert all(place >= 0 for place in places.values()), places
    assert max(places[task_id] for task_id in failed) < places[solved]
    assert not list(folder.glob(".*.tmp"))


def test_write_report(case, tmp_path):
    tasks, submission, solved, failed = case
    score = score_submission(submission, tasks)
    assert [t.fraction for t in score.per_task] == [0.0, 1.0, 0.0]
    index = write_report(tasks, submission, score, tmp_path / "report", limit=200)
    assert index == tmp_path / "report" / "index.html"
    assert_report(index.parent, tasks, solved, failed)


def test_report_limit_draws_failures_first(case, tmp_path):
    tasks, submission, solved, failed = case
    write_report(tasks, submission, score_submission(submission, tasks), tmp_path, limit=2)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(failed)
    assert "1 more tasks not drawn" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_evaluate_report_cli(case, tmp_path, run_evaluate):
    tasks, submission, solved, failed = case
    submission_path = tmp_path / "submission.json"
    write_submission(submission_path, submission, tasks)
    challenges, solutions = write_kaggle_files(tmp_path, tasks)
    out = tmp_path / "report"
    result = run_evaluate(submission_path, "--challenges", challenges, "--solutions", solutions, "--report", out)
    assert result.returncode == 0, result.stderr
    assert "33.33%" in result.stdout and "index.html" in result.stderr
    assert_report(out, tasks, solved, failed)

    # The solutions alone have no demonstration pairs to draw.
    alone = run_evaluate(submission_path, "--solutions", solutions, "--report", tmp_path / "none")
    assert alone.returncode == 2
    assert len(alone.stderr.strip().splitlines()) == 1 and "--challenges" in alone.stderr
    assert not (tmp_path / "none").exists()
