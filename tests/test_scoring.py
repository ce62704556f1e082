"""Local scoring: the leaderboard's unit, the bundled eval set, and the evaluate.py command line."""

import numpy as np
import orjson
import pytest

from arc_data.grids import ArcDataError
from arc_data.sources import load_bundled
from arc_data.tasks import Task
from submission.scoring import format_score, read_solutions, score_against, score_submission
from submission.writer import SubmissionError, prefill, set_attempts, write_submission

def g(rows):
    return np.array(rows, dtype=np.uint8)


def wrong_version(grid: np.ndarray, shift: int = 1) -> np.ndarray:
    """Same shape, one cell a different colour."""
    changed = grid.copy()
    changed[0, 0] = (changed[0, 0] + shift) % 10
    return changed


@pytest.fixture(scope="module")
def eval_tasks():
    return load_bundled("arc-agi-2", "eval")


def solved_submission(tasks):
    submission = prefill(tasks)
    for task in tasks:
        for index, output in enumerate(task.test_outputs):
            set_attempts(submission, task.id, index, [output])
    return submission


def test_true_solutions_score_one(eval_tasks):
    score = score_submission(solved_submission(eval_tasks), eval_tasks)
    assert score.pass_at_2 == 1.0
    assert score.pass_at_2_per_output == 1.0
    assert score.tasks == len(eval_tasks) == 120
    assert score.outputs == sum(len(t.test_outputs) for t in eval_tasks)


def test_true_solution_as_attempt_2_scores_one(eval_tasks):
    submission = prefill(eval_tasks)
    for task in eval_tasks:
        for index, output in enumerate(task.test_outputs):
            set_attempts(submission, task.id, index, [wrong_version(output), output])
    assert score_submission(submission, eval_tasks).pass_at_2 == 1.0


def test_every_attempt_wrong_scores_zero(eval_tasks):
    submission = prefill(eval_tasks)
    for task in eval_tasks:
        for index, output in enumerate(task.test_outputs):
            set_attempts(submission, task.id, index, [wrong_version(output, 1), wrong_version(output, 2)])
    score = score_submission(submission, eval_tasks)
    assert score.pass_at_2 == 0.0
    assert score.pass_at_2_per_output == 0.0
    assert score.hits == 0


TWO_INPUTS = Task("aaaa0001", ((g([[1]]), g([[2]])),), (g([[1]]), g([[3]])), (g([[2]]), g([[4, 4]])))
ONE_INPUT = Task("bbbb0002", ((g([[1]]), g([[2]])),), (g([[5]]),), (g([[6]]),))
THREE_INPUTS = Task("cccc0003", ((g([[1]]), g([[2]])),), (g([[5]]),) * 3, (g([[6]]), g([[7]]), g([[8]])))


def test_partial_score_by_hand():
    tasks = [TWO_INPUTS, ONE_INPUT, THREE_INPUTS]
    submission = prefill(tasks)
    set_attempts(submission, "aaaa0001", 0, [g([[9]]), g([[2]])])  # hit by attempt_2
    set_attempts(submission, "aaaa0001", 1, [g([[4]]), g([[4], [4]])])  # wrong shapes: miss
    set_attempts(submission, "cccc0003", 2, [g([[8]])])  # one of three
    score = score_submission(submission, tasks)
    assert [(t.task_id, t.hits, t.outputs) for t in score.per_task] == [
        ("aaaa0001", 1, 2), ("bbbb0002", 0, 1), ("cccc0003", 1, 3)]
    assert score.per_task[0].fraction == 0.5
    assert score.pass_at_2 == pytest.approx((0.5 + 0 + 1 / 3) / 3)
    assert score.pass_at_2_per_output == pytest.approx(2 / 6)
    assert (score.tasks, score.outputs, score.hits) == (3, 6, 2)
    text = format_score(score, per_task=True)
    assert "aaaa0001" in text and "27.78%" in text and "2 of 6 outputs" in text


def test_scoring_validates_first():
    submission = prefill([TWO_INPUTS])
    with pytest.raises(SubmissionError, match="task bbbb0002: is missing"):
        score_submission(submission, [TWO_INPUTS, ONE_INPUT])
    submission["aaaa0001"][0]["attempt_1"] = [[1], [2, 3]]
    with pytest.raises(SubmissionError, match="ragged"):
        score_submission(submission, [TWO_INPUTS])


def test_scoring_needs_solutions():
    with pytest.raises(ArcDataError, match="task aaaa0001: has no test outputs"):
        score_submission(prefill([TWO_INPUTS]), [TWO_INPUTS.without_solutions()])


def test_read_solutions_checks_every_grid(tmp_path):
    path = tmp_path / "solutions.json"
    path.write_bytes(orjson.dumps({"aaaa0001": [[[1]], [[2, 3]]]}))
    truth = read_solutions(path)
    assert [o.tolist() for o in truth["aaaa0001"]] == [[[1]], [[2, 3]]]
    score = score_against({"aaaa0001": [{"attempt_1": [[1]], "attempt_2": [[0]]}] * 2}, truth)
    assert score.pass_at_2 == 0.5
    for bad, problem in [([1], "is not an object"), ({}, "holds no tasks"),
                         ({"t": []}, "task t: is not a non-empty"),
                         ({"t": [[[1, 12]]]}, r"task t: solution\[0\]\[0\]\[1\] is 12")]:
        path.write_bytes(orjson.dumps(bad))
        with pytest.raises(ArcDataError, match=problem):
            read_solutions(path)


# --- evaluate.py as a user runs it (the run_evaluate fixture: its main, and the command) ---

@pytest.fixture(scope="module")
def files(eval_tasks, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    true_path = folder / "true.json"
    write_submission(true_path, solved_submission(eval_tasks), eval_tasks)
    solutions = folder / "solutions.json"
    solutions.write_bytes(orjson.dumps({t.id: [o.tolist() for o in t.test_outputs] for t in eval_tasks}))
    return folder, true_path, solutions


def test_evaluate_json_on_true_solutions(files, run_evaluate):
    _, true_path, solutions = files
    for extra in (["--solutions", solutions], ["--dataset", "arc-agi-2", "--split", "eval"]):
        result = run_evaluate(true_path, "--json", *extra)
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert report["pass@2"] == 1.0
        assert report["pass@2_per_output"] == 1.0
        assert report["tasks"] == 120 and report["outputs"] == 167


def test_evaluate_text_and_task_table(files, run_evaluate):
    _, true_path, solutions = files
    result = run_evaluate(true_path, "--solutions", solutions, "--tasks")
    assert result.returncode == 0, result.stderr
    assert "100.00%" in result.stdout and "167 of 167 outputs" in result.stdout
    assert "0934a4d8" in result.stdout


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_evaluate_rejects_malformed_submission(files, eval_tasks, run_evaluate):
    folder, true_path, solutions = files
    submission = orjson.loads(true_path.read_bytes())
    task_id = eval_tasks[3].id
    submission[task_id][0]["attempt_2"] = [[1, 2], [3]]
    bad = folder / "ragged.json"
    bad.write_bytes(orjson.dumps(submission))
    assert_one_error_line(run_evaluate(bad, "--solutions", solutions),
                          "ragged.json", f"task {task_id}", "attempt_2 is ragged")
    not_json = folder / "broken.json"
    not_json.write_text("{\"0934a4d8\": [")
    assert_one_error_line(run_evaluate(not_json), "broken.json", "not valid JSON")
    assert_one_error_line(run_evaluate(folder / "absent.json"), "absent.json", "cannot be read")


def test_evaluate_rejects_malformed_solutions(files, run_evaluate):
    folder, true_path, _ = files
    bad = folder / "bad_solutions.json"
    bad.write_bytes(orjson.dumps({"0934a4d8": [[[1, 2], [3, 4, 5]]]}))
    assert_one_error_line(run_evaluate(true_path, "--solutions", bad),
                          "bad_solutions.json", "task 0934a4d8", "ragged")
    bad.write_text("[1, 2")
    assert_one_error_line(run_evaluate(true_path, "--solutions", bad), "bad_solutions.json", "not valid JSON")


def test_evaluate_rejects_conflicting_sources(files, run_evaluate):
    _, true_path, solutions = files
    assert_one_error_line(run_evaluate(true_path, "--dataset", "arc-agi-1", "--solutions", solutions), "not both")
