"""Which tasks are the same task: the guard that keeps evaluated tasks out of pretraining.

ARC's public sets share tasks under different names and in different versions: ARC-AGI-2's
training split holds 376 of ARC-AGI-1's 400 evaluation tasks (same ids, demonstration pairs
reordered, a few pairs corrected) and one more as a colour-permuted copy under another id
(``caa06a1f`` of ``50a16a69``); in ARC-AGI-1 itself, training tasks ``40853293`` and ``caa06a1f``
share pairs with evaluation tasks ``070dd51e`` and ``50a16a69``. Two tasks overlap when they share an
id, or share content: any example pair (a demonstration pair, or a test input with its known
output), compared as grids, so the JSON layout, key order and pair order do not matter. A task
whose test outputs are not given is compared by its demonstrations.

Augmented copies count: a pair matches a pair that is one of the 8 dihedral transforms of it with
its colours 1..9 permuted (0 stays), because pretraining trains on exactly those versions of every
task; a copy under a transform would teach the network the evaluated task all the same. The price
is an occasional match between different tasks that share one small pair up to colours (ARC-AGI-1
training tasks ``27a28665`` and ``44f52bb0`` share a 3x3 -> 1x1 pair): the guard refuses rather
than let a copy through, and ``minus=`` removes such a task.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from arc_data.grids import NUM_COLOURS, ArcDataError
from arc_data.tasks import Task


def _dihedral_versions(grid: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and reflections of a grid (in a fixed order), as views."""
    versions = []
    for g in (grid, grid.T):
        versions += [g, g[::-1], g[:, ::-1], g[::-1, ::-1]]
    return versions


_COLOURS = np.arange(NUM_COLOURS, dtype=np.uint8)[:, None]


def _relabelled(cells: np.ndarray) -> np.ndarray:
    """Colours 1..9 renamed 1, 2, ... in order of first appearance (0 stays): the same array for every
    colour permutation of the input."""
    is_colour = cells[None, :] == _COLOURS  # (10, cells)
    present = is_colour.any(axis=1)
    first = np.where(present, is_colour.argmax(axis=1), cells.size)
    first[0] = -1  # 0 keeps its name
    mapping = np.empty(NUM_COLOURS, dtype=np.uint8)
    mapping[np.argsort(first, kind="stable")] = _COLOURS[:, 0]
    return mapping[cells]


def pair_key(grid_in: np.ndarray, grid_out: np.ndarray) -> bytes:
    """A digest of an (input, output) pair that is the same for all its dihedral and colour versions."""
    return _pair_key(grid_in.shape, grid_in.astype(np.uint8).tobytes(), grid_out.shape,
                     grid_out.astype(np.uint8).tobytes())


@functools.lru_cache(maxsize=1 << 16)  # the same bundled pairs are looked up by several filters and guards
def _pair_key(shape_in: tuple[int, int], cells_in: bytes, shape_out: tuple[int, int], cells_out: bytes) -> bytes:
    grid_in = np.frombuffer(cells_in, np.uint8).reshape(shape_in)
    grid_out = np.frombuffer(cells_out, np.uint8).reshape(shape_out)
    versions = []
    for a, b in zip(_dihedral_versions(grid_in), _dihedral_versions(grid_out)):
        cells = _relabelled(np.concatenate([a.ravel(), b.ravel()]))
        versions.append(bytes([*a.shape, *b.shape]) + cells.tobytes())
    return hashlib.blake2b(min(versions), digest_size=16).digest()


def content_keys(task: Task) -> frozenset[bytes]:
    """Keys of every example pair of a task: its demonstrations, and its test pairs when the outputs are known."""
    pairs = list(task.train) + list(zip(task.test_inputs, task.test_outputs or ()))
    return frozenset(pair_key(i, o) for i, o in pairs)


@dataclass(frozen=True)
class Overlap:
    task_id: str  # the task found in the checked set
    other_id: str  # the task of the reference set it overlaps
    by: str  # "id" or "content"

    def describe(self) -> str:
        if self.by == "id":
            return f"task {self.task_id} is also an evaluated task"
        return (f"task {self.task_id} shares an example pair (up to rotation and colours) with evaluated task "
                f"{self.other_id}")


class TaskIndex:
    """The ids and content keys of a set of tasks, to test other tasks against."""

    def __init__(self, tasks: Iterable[Task]):
        self.ids: set[str] = set()
        self.owner: dict[bytes, str] = {}  # content key -> id of a task holding it
        for task in tasks:
            self.ids.add(task.id)
            for key in content_keys(task):
                self.owner.setdefault(key, task.id)

    def overlap(self, task: Task) -> Overlap | None:
        """How ``task`` overlaps the indexed tasks, or None."""
        if task.id in self.ids:
            return Overlap(task.id, task.id, "id")
        shared = sorted(self.owner[k] for k in content_keys(task) if k in self.owner)
        return Overlap(task.id, shared[0], "content") if shared else None


def overlaps(tasks: Sequence[Task], reference: Sequence[Task]) -> list[Overlap]:
    """Every task of ``tasks`` that overlaps a task of ``reference``, by id or by content."""
    index = TaskIndex(reference)
    return [found for found in map(index.overlap, tasks) if found is not None]


def subtract(tasks: Sequence[Task], removed: Sequence[Task]) -> list[Task]:
    """``tasks`` without those that overlap ``removed`` (by id or by content)."""
    index = TaskIndex(removed)
    return [t for t in tasks if index.overlap(t) is None]


def refuse_overlap(pretraining: Sequence[tuple[str, Sequence[Task]]], evaluated: Sequence[Task],
                   evaluated_sources: Sequence[str]) -> None:
    """Raise one ``ArcDataError`` line when a pretraining source overlaps the evaluated tasks.

    ``pretraining``: (source name, its tasks) pairs. The message names the source, the first task found
    and how to subtract the evaluated tasks from it.
    """
    index = TaskIndex(evaluated)
    for source, tasks in pretraining:
        found = [o for o in map(index.overlap, tasks) if o is not None]
        if found:
            fix = source + "".join(f",minus={s}" for s in evaluated_sources)
            raise ArcDataError(f"overlaps the evaluated tasks ({len(found)} of its tasks): {found[0].describe()}; "
                               f"pretrain on {fix!r} instead", source=f"pretraining source {source!r}")
