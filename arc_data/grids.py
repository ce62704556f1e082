"""Grid validation: turning untrusted JSON values into checked ``uint8`` arrays."""

from __future__ import annotations

import numpy as np

MAX_SIDE = 30
NUM_COLOURS = 10


class ArcDataError(ValueError):
    """A task source is malformed. The message is one line naming the source, the task and the problem."""

    def __init__(self, problem: str, *, source: str | None = None, task_id: str | None = None):
        self.problem = problem
        self.source = source
        self.task_id = task_id
        where = []
        if source:
            where.append(str(source))
        if task_id is not None:
            where.append(f"task {task_id}")
        super().__init__(": ".join(where + [problem]))

    def located(self, *, source: str | None = None, task_id: str | None = None) -> "ArcDataError":
        """The same problem with the source or task filled in where it was not known yet."""
        return ArcDataError(self.problem, source=self.source or source,
                            task_id=self.task_id if self.task_id is not None else task_id)


def to_grid(value: object, what: str) -> np.ndarray:
    """Check that ``value`` is a rectangular list of lists of ints 0..9, 1..30 on a side.

    ``what`` names the grid in the error message, e.g. ``"train[2].output"``.
    """
    if not isinstance(value, list) or not value:
        raise ArcDataError(f"{what} is {'empty' if value == [] else 'not a list of rows'}")
    if len(value) > MAX_SIDE:
        raise ArcDataError(f"{what} has {len(value)} rows, more than {MAX_SIDE}")
    width = None
    for r, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise ArcDataError(f"{what} row {r} is {'empty' if row == [] else 'not a list'}")
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                raise ArcDataError(f"{what} has {width} columns, more than {MAX_SIDE}")
        elif len(row) != width:
            raise ArcDataError(f"{what} is ragged: row {r} has {len(row)} cells, row 0 has {width}")
        for c, cell in enumerate(row):
            # bool is an int subclass in Python; a colour must be a real integer.
            if type(cell) is not int:
                raise ArcDataError(f"{what}[{r}][{c}] is {cell!r}, not an integer colour")
            if not 0 <= cell < NUM_COLOURS:
                raise ArcDataError(f"{what}[{r}][{c}] is {cell}, outside colours 0..9")
    return np.array(value, dtype=np.uint8)


def check_grid_array(grid: np.ndarray, what: str = "grid") -> np.ndarray:
    """Check an array already in memory (e.g. a model's prediction) against the same rules."""
    if grid.ndim != 2 or grid.shape[0] < 1 or grid.shape[1] < 1:
        raise ArcDataError(f"{what} has shape {grid.shape}, not a non-empty 2-D grid")
    if max(grid.shape) > MAX_SIDE:
        raise ArcDataError(f"{what} has shape {grid.shape}, a side over {MAX_SIDE}")
    if grid.size and (grid.min() < 0 or grid.max() >= NUM_COLOURS):
        raise ArcDataError(f"{what} has a value outside colours 0..9")
    return np.ascontiguousarray(grid, dtype=np.uint8)


def grid_to_list(grid: np.ndarray) -> list[list[int]]:
    return grid.astype(int).tolist()
