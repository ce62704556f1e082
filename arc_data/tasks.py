"""The ``Task`` value: demonstration pairs, test inputs and (when known) test outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arc_data.grids import ArcDataError, grid_to_list, to_grid

Pair = tuple[np.ndarray, np.ndarray]  # (input grid, output grid), uint8


@dataclass(frozen=True)
class Task:
    """One ARC task. Grids are ``uint8`` arrays; treat them as values and never write into them."""

    id: str
    train: tuple[Pair, ...]
    test_inputs: tuple[np.ndarray, ...]
    test_outputs: tuple[np.ndarray, ...] | None = None  # None when the solutions are not given

    @property
    def has_solutions(self) -> bool:
        return self.test_outputs is not None

    def grids(self) -> list[np.ndarray]:
        """Every grid of the task, demonstrations first, then test inputs and known test outputs."""
        out = [g for pair in self.train for g in pair] + list(self.test_inputs)
        return out + list(self.test_outputs or ())

    @property
    def max_side(self) -> int:
        """The longest side of any of its grids (test outputs included when known)."""
        return max(max(g.shape) for g in self.grids())

    def without_solutions(self) -> "Task":
        return Task(self.id, self.train, self.test_inputs, None)

    def to_json(self) -> dict:
        """The original ARC layout: ``{"train": [{input, output}], "test": [{input[, output]}]}``."""
        test = [{"input": grid_to_list(g)} for g in self.test_inputs]
        for entry, out in zip(test, self.test_outputs or ()):
            entry["output"] = grid_to_list(out)
        return {"train": [{"input": grid_to_list(i), "output": grid_to_list(o)} for i, o in self.train],
                "test": test}


def fits(task: Task, side: int) -> bool:
    """Whether every grid of the task, test outputs included when known, fits a ``side`` x ``side`` square:
    the one rule that selects tasks by size (``--max-side``, the ``max-side=N`` source filter)."""
    return task.max_side <= side


def select(tasks: list[Task], max_side: int | None = None, limit: int | None = None) -> list[Task]:
    """The tasks that fit ``max_side`` x ``max_side`` (all when None), then the first ``limit`` of them."""
    chosen = [t for t in tasks if fits(t, max_side)] if max_side is not None else list(tasks)
    return chosen[:limit] if limit is not None else chosen


def task_from_json(task_id: str, value: object, *, test_outputs: object = None) -> Task:
    """Build a checked ``Task`` from the ARC JSON layout.

    Test outputs come from ``test[i]["output"]`` when every test entry has one, or from
    ``test_outputs`` (a list of grids, the Kaggle solutions layout) when given.
    Raises ``ArcDataError`` naming the task and the problem.
    """
    try:
        return _task_from_json(task_id, value, test_outputs)
    except ArcDataError as error:
        raise error.located(task_id=task_id) from None


def _task_from_json(task_id: str, value: object, test_outputs: object) -> Task:
    if not isinstance(value, dict):
        raise ArcDataError(f"is a {type(value).__name__}, not an object with 'train' and 'test'")
    train_json, test_json = value.get("train"), value.get("test")
    if not isinstance(train_json, list) or not train_json:
        raise ArcDataError("has no train pairs")
    if not isinstance(test_json, list) or not test_json:
        raise ArcDataError("has no test inputs")
    train = tuple((_field(ex, "input", f"train[{k}]"), _field(ex, "output", f"train[{k}]"))
                  for k, ex in enumerate(train_json))
    test_inputs = tuple(_field(ex, "input", f"test[{k}]") for k, ex in enumerate(test_json))
    outputs = None
    if test_outputs is not None:
        if not isinstance(test_outputs, list) or len(test_outputs) != len(test_inputs):
            count = len(test_outputs) if isinstance(test_outputs, list) else "no list of"
            raise ArcDataError(f"solutions give {count} outputs for {len(test_inputs)} test inputs")
        outputs = tuple(to_grid(g, f"solution[{k}]") for k, g in enumerate(test_outputs))
    elif all(isinstance(ex, dict) and "output" in ex for ex in test_json):
        outputs = tuple(_field(ex, "output", f"test[{k}]") for k, ex in enumerate(test_json))
    return Task(task_id, train, test_inputs, outputs)


def _field(example: object, key: str, what: str) -> np.ndarray:
    if not isinstance(example, dict) or key not in example:
        raise ArcDataError(f"{what} has no '{key}' grid")
    return to_grid(example[key], f"{what}.{key}")
