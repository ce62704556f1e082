"""The submission file: pre-filled so it is always complete, validated, written atomically.

Layout (Kaggle's): ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}`` with one entry per
test input, in order, for every task of the challenges file. A missing task or key fails the whole
submission on Kaggle (a scoring error, not a zero), so the file is pre-filled before any model runs,
overwritten slot by slot, and checked before every write.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import orjson

from arc_data.grids import ArcDataError, check_grid_array, grid_to_list, to_grid
from arc_data.sources import new_file_mode, read_json
from arc_data.tasks import Task

ATTEMPT_KEYS = ("attempt_1", "attempt_2")
# The second fallback guess: a valid grid that costs nothing when it is wrong.
FALLBACK_ATTEMPT_2 = ((0,),)

Submission = dict[str, list[dict[str, list[list[int]]]]]


class SubmissionError(ValueError):
    """A submission is malformed. The message is one line: ``[source: ][task ID: ]problem``."""

    def __init__(self, problem: str, *, source: str | None = None, task_id: str | None = None):
        self.problem = problem
        self.source = source
        self.task_id = task_id
        where = [str(source)] if source else []
        if task_id is not None:
            where.append(f"task {task_id}")
        super().__init__(": ".join(where + [problem]))

    def located(self, *, source: str | None = None) -> "SubmissionError":
        """The same problem with the file named, where it was not known yet."""
        return SubmissionError(self.problem, source=self.source or source, task_id=self.task_id)


def prefill(tasks: Sequence[Task]) -> Submission:
    """A complete, valid submission before any prediction: attempt_1 is the test input itself
    (some tasks barely change their input), attempt_2 is ``[[0]]``."""
    return {task.id: [{"attempt_1": grid_to_list(test_input), "attempt_2": [list(r) for r in FALLBACK_ATTEMPT_2]}
                      for test_input in task.test_inputs]
            for task in tasks}


def set_attempts(submission: Submission, task_id: str, test_index: int, grids: Sequence[np.ndarray]) -> None:
    """Overwrite the attempts of one test input with one or two grids, best first.

    With one grid only ``attempt_1`` changes and ``attempt_2`` keeps its current value (the
    pre-filled fallback or an earlier prediction): a slot is never emptied.
    """
    if task_id not in submission:
        raise SubmissionError("is not in the submission", task_id=task_id)
    entries = submission[task_id]
    if not 0 <= test_index < len(entries):
        raise SubmissionError(f"has no test input {test_index} (it has {len(entries)})", task_id=task_id)
    if not 1 <= len(grids) <= len(ATTEMPT_KEYS):
        raise SubmissionError(f"got {len(grids)} grids for test input {test_index}; give 1 or 2", task_id=task_id)
    # Check every grid before writing any, so a bad second grid leaves the entry as it was.
    checked = [_checked_grid(grid, f"{key} for test input {test_index}", task_id)
               for key, grid in zip(ATTEMPT_KEYS, grids)]
    for key, grid in zip(ATTEMPT_KEYS, checked):
        entries[test_index][key] = grid_to_list(grid)


def _checked_grid(grid: np.ndarray, what: str, task_id: str) -> np.ndarray:
    array = np.asarray(grid)
    # A float or bool array would be cast to colours silently; a prediction must already be colours.
    if not np.issubdtype(array.dtype, np.integer):
        raise SubmissionError(f"{what} has dtype {array.dtype}, not integer colours", task_id=task_id)
    try:
        return check_grid_array(array, what)
    except ArcDataError as error:
        raise SubmissionError(error.problem, task_id=task_id) from None


def validate_submission(submission: object, tasks: Sequence[Task]) -> None:
    """Check ``submission`` against the challenges' tasks; raise ``SubmissionError`` on the first problem."""
    validate_entry_counts(submission, {task.id: len(task.test_inputs) for task in tasks})


def validate_entry_counts(submission: object, expected: Mapping[str, int]) -> None:
    """Check ``submission`` against ``{task_id: number of test inputs}``.

    Every task id must be present and no other; each task holds one entry per test input; each entry
    is an object with both attempts; each attempt is a valid grid. Keys beyond the two attempts are
    tolerated, as Kaggle reads only those two.
    """
    if not isinstance(submission, dict):
        raise SubmissionError(f"the submission is {_json_type(submission)}, not an object of task id -> attempts")
    missing = [task_id for task_id in expected if task_id not in submission]
    if missing:
        raise SubmissionError(f"is missing from the submission ({len(missing)} tasks missing in all)",
                              task_id=missing[0])
    extra = [task_id for task_id in submission if task_id not in expected]
    if extra:
        raise SubmissionError("is not a task of the challenges", task_id=extra[0])
    for task_id, count in expected.items():
        try:
            _check_task_entries(submission[task_id], count)
        except SubmissionError as error:
            raise SubmissionError(error.problem, task_id=task_id) from None


def _check_task_entries(entries: object, count: int) -> None:
    if not isinstance(entries, list):
        raise SubmissionError(f"is {_json_type(entries)}, not a list of one entry per test input")
    if len(entries) != count:
        raise SubmissionError(f"has {len(entries)} entries, expected {count} (one per test input)")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SubmissionError(f"entry {index} is {_json_type(entry)}, not an object with "
                                  f"{' and '.join(ATTEMPT_KEYS)}")
        for key in ATTEMPT_KEYS:
            if key not in entry:
                raise SubmissionError(f"entry {index} has no '{key}'")
            try:
                to_grid(entry[key], f"entry {index} {key}")
            except ArcDataError as error:
                raise SubmissionError(error.problem) from None


def _json_type(value: object) -> str:
    """The JSON name of a value's type, with its article: "a list", "an object"."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def write_submission(path: Path | str, submission: Submission, tasks: Sequence[Task]) -> None:
    """Validate, then replace the file at ``path`` atomically.

    The bytes go to a temporary file in the same directory (so ``os.replace`` is a rename on one
    file system), are flushed and fsynced, then renamed over the file: a reader, or a notebook
    killed at its deadline, sees the old file or the new one, never half of one. A symlink is
    followed (its target is replaced and the link stays a link); anything else that is not a
    regular file is refused (see ``output_target``). A replaced file keeps its permissions; a new
    one gets those of a plain write (the temporary file is created private).
    """
    validate_submission(submission, tasks)
    target = output_target(path)
    data = orjson.dumps(submission)
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else new_file_mode()
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        # Leave no stray temporary file behind; the original error still propagates.
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def output_target(path: Path | str) -> Path:
    """The file that a submission written to ``path`` replaces: the final target of a symlink, else
    ``path`` itself (which may not exist yet).

    Raises ``SubmissionError`` (one line) when that is a directory, a device such as ``/dev/stdout``,
    a FIFO or a socket: the atomic rename would put a regular file in its place, and writing through
    it would not help either, since the file is rewritten after every task.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        via = f" (the target of a symlink, {target})" if target != path else ""
        raise SubmissionError(f"is {_file_kind(mode)}{via}, not a regular file; give a file path for the "
                              "submission", source=str(path))
    return target


def prepare_output(path: Path | str) -> Path:
    """Check ``path`` as a place for the submission and create its folder when missing; returns the
    file that will be written (see ``output_target``)."""
    target = output_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_submission(path: Path | str) -> object:
    """The parsed JSON of a submission file, unchecked (see ``validate_submission``)."""
    try:
        return read_json(Path(path))
    except ArcDataError as error:
        raise SubmissionError(error.problem, source=str(path)) from None
