"""Local scoring in the leaderboard's unit.

A test output is hit when ``attempt_1`` or ``attempt_2`` equals it exactly (shape and every cell).
A task scores the fraction of its test outputs hit; the leaderboard's pass@2 is the mean of the task
scores, so a task with two test inputs weighs as much as one with a single input. The fraction of
all test outputs hit is reported beside it, because papers sometimes quote that instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from arc_data.grids import ArcDataError, to_grid
from arc_data.sources import load_bundled, load_kaggle, load_path, read_json
from arc_data.tasks import Task
from submission.writer import ATTEMPT_KEYS, SubmissionError, read_submission, validate_entry_counts

# task id -> the true output of each test input, in order.
Truth = Mapping[str, Sequence[np.ndarray]]

DEFAULT_DATASET = "arc-agi-2"


@dataclass(frozen=True)
class TaskScore:
    task_id: str
    hits: int  # test outputs hit by either attempt
    outputs: int  # test outputs of the task

    @property
    def fraction(self) -> float:
        return self.hits / self.outputs


@dataclass(frozen=True)
class Score:
    pass_at_2: float  # mean over tasks of each task's fraction of outputs hit (the leaderboard's unit)
    pass_at_2_per_output: float  # fraction of all test outputs hit
    tasks: int
    outputs: int
    hits: int  # test outputs hit, over all tasks
    per_task: tuple[TaskScore, ...]

    @property
    def task_points(self) -> float:
        """Sum of the task scores: pass@2 times the number of tasks."""
        return sum(t.fraction for t in self.per_task)

    def to_json(self) -> dict:
        return {"pass@2": self.pass_at_2, "pass@2_per_output": self.pass_at_2_per_output,
                "tasks": self.tasks, "outputs": self.outputs, "hits": self.hits,
                "per_task": [asdict(t) | {"score": t.fraction} for t in self.per_task]}


def truth_of(tasks: Sequence[Task]) -> dict[str, tuple[np.ndarray, ...]]:
    """The test outputs of tasks that carry them; ``ArcDataError`` names a task that does not."""
    for task in tasks:
        if not task.has_solutions:
            raise ArcDataError("has no test outputs to score against", task_id=task.id)
    return {task.id: task.test_outputs for task in tasks}


def score_submission(submission: object, tasks: Sequence[Task]) -> Score:
    """Validate ``submission`` against ``tasks`` (which must carry their test outputs), then score it."""
    return score_against(submission, truth_of(tasks))


def score_against(submission: object, truth: Truth) -> Score:
    """Validate ``submission`` against ``truth``'s task ids and output counts, then score it."""
    if not truth:
        raise ValueError("there are no tasks to score against")
    validate_entry_counts(submission, {task_id: len(outputs) for task_id, outputs in truth.items()})
    per_task = tuple(TaskScore(task_id, _hits(submission[task_id], outputs), len(outputs))
                     for task_id, outputs in truth.items())
    hits = sum(t.hits for t in per_task)
    outputs = sum(t.outputs for t in per_task)
    return Score(pass_at_2=sum(t.fraction for t in per_task) / len(per_task),
                 pass_at_2_per_output=hits / outputs, tasks=len(per_task), outputs=outputs, hits=hits,
                 per_task=per_task)


def _hits(entries: list[dict], outputs: Sequence[np.ndarray]) -> int:
    return sum(any(_same_grid(entry[key], truth) for key in ATTEMPT_KEYS)
               for entry, truth in zip(entries, outputs))


def _same_grid(attempt: list[list[int]], truth: np.ndarray) -> bool:
    # Already validated; this only converts. array_equal is False for different shapes.
    return bool(np.array_equal(to_grid(attempt, "attempt"), truth))


def read_solutions(path: Path | str) -> dict[str, tuple[np.ndarray, ...]]:
    """A Kaggle-layout solutions file, ``{task_id: [grid, ...]}``, checked grid by grid."""
    data = read_json(Path(path))
    if not isinstance(data, dict):
        raise ArcDataError("is not an object of task id -> list of output grids", source=str(path))
    if not data:
        raise ArcDataError("holds no tasks", source=str(path))
    return {task_id: _solution_grids(outputs, str(path), task_id) for task_id, outputs in data.items()}


def _solution_grids(outputs: object, source: str, task_id: str) -> tuple[np.ndarray, ...]:
    if not isinstance(outputs, list) or not outputs:
        raise ArcDataError("is not a non-empty list of output grids", source=source, task_id=task_id)
    try:
        return tuple(to_grid(grid, f"solution[{k}]") for k, grid in enumerate(outputs))
    except ArcDataError as error:
        raise error.located(source=source, task_id=task_id) from None


def load_truth(*, dataset: str | None = None, split: str = "eval", solutions: Path | None = None,
               challenges: Path | None = None) -> dict[str, tuple[np.ndarray, ...]]:
    """The true outputs to score against, from one of three sources.

    - ``solutions`` (with ``challenges``): the Kaggle pair, checked against each other.
    - ``solutions`` alone: the solutions file defines the task ids and the outputs per task.
    - ``challenges`` alone: a task file or folder whose test entries carry their outputs.
    - neither: a bundled dataset (``arc-agi-2`` unless named) and split.
    """
    if solutions is not None and challenges is not None:
        return truth_of(load_kaggle(Path(challenges), Path(solutions)))
    if solutions is not None:
        return read_solutions(solutions)
    if challenges is not None:
        try:
            return truth_of(load_path(Path(challenges)))
        except ArcDataError as error:
            raise error.located(source=str(challenges)) from None
    return truth_of(load_bundled(dataset or DEFAULT_DATASET, split))


def score_file(submission_path: Path | str, truth: Truth) -> Score:
    """Read and score a submission file; every problem is one error line naming the file."""
    submission = read_submission(submission_path)
    try:
        return score_against(submission, truth)
    except SubmissionError as error:
        raise error.located(source=str(submission_path)) from None


def format_score(score: Score, per_task: bool = False) -> str:
    """Human-readable summary; with ``per_task``, a table of every task first."""
    lines = []
    if per_task:
        lines.append(f"{'task':<12} {'hits':>4} {'outputs':>7} {'score':>6}")
        lines += [f"{t.task_id:<12} {t.hits:>4} {t.outputs:>7} {t.fraction:>6.2f}" for t in score.per_task]
        lines.append("")
    lines.append(f"pass@2 per task (leaderboard unit): {100 * score.pass_at_2:6.2f}%  "
                 f"({score.task_points:.2f} of {score.tasks} tasks)")
    lines.append(f"pass@2 per test output:             {100 * score.pass_at_2_per_output:6.2f}%  "
                 f"({score.hits} of {score.outputs} outputs)")
    return "\n".join(lines)
