"""The on-the-fly training stream: task groups -> augmented, translated, encoded samples.

Every augmented version of every task has a puzzle id (one learned embedding row). A task group is
one task with its augmentation table; its ids are ``first_id .. first_id + len(table) - 1``.

An epoch visits every group once in a random order; each visit draws one augmented version from
the group's table and yields all of that version's training pairs in a random order, each with a
fresh random translation, encoded by the numba kernels. Nothing is precomputed beyond the tables.

Training tasks train on all their pairs (demonstrations and test pairs). Held-out tasks (the
reference's transductive setup for the evaluation set) train on their demonstrations only; their
test inputs are evaluated under the same puzzle ids.

Every rank draws the same global stream (it is cheap), so a run's samples do not depend on the
number of processes; the trainer decides which rank takes which sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arc_data.overlap import refuse_overlap
from arc_data.sources import load_source
from arc_data.tasks import Task
from augment.augmentation import Augmentation
from augment.kernels import GridPool, encode_pairs
from augment.tables import AugmentationTable, augmentation_table, fitting_scale
from pretrain.config import DataConfig


# Canvas sides a task is bucketed to: the smallest that holds its largest grid.
CANVAS_BUCKETS = (8, 12, 16, 20, 24, 30)


def canvas_for(max_side: int, bucket: bool, full_canvas: int) -> int:
    """The canvas side a task with grids up to ``max_side`` runs at."""
    if not bucket:
        return full_canvas
    return next((c for c in CANVAS_BUCKETS if max_side <= c <= full_canvas), full_canvas)


@dataclass
class TaskGroup:
    task: Task
    table: AugmentationTable
    first_id: int
    pair_inputs: np.ndarray  # (pairs,) int64: index of each training pair's input grid in the catalogue's pool
    held_out: bool  # True: the task's test inputs are for evaluation
    canvas: int  # the canvas side this task's samples use

    def puzzle_id(self, version: int) -> int:
        return self.first_id + version


@dataclass
class SampleBatch:
    """Encoded samples: token rows and the puzzle id of each sample's augmented version."""

    inputs: np.ndarray      # (N, canvas * canvas) uint8
    labels: np.ndarray      # (N, canvas * canvas) uint8
    puzzle_ids: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.puzzle_ids)

    def slice(self, start: int, stop: int) -> "SampleBatch":
        return SampleBatch(self.inputs[start:stop], self.labels[start:stop], self.puzzle_ids[start:stop])


class PuzzleCatalogue:
    """All task groups, their puzzle-id ranges, and one pool holding every training grid.

    A pair's input is grid ``2k`` of the pool and its output grid ``2k + 1``.
    """

    def __init__(self, train_tasks: list[Task], held_out_tasks: list[Task], num_aug: int, seed: int, *,
                 canvas: int = 30, bucket_canvas: bool = False, max_scale: int = 1):
        """``max_scale`` > 1: scale augmentation, each version upscaled by up to that factor where
        the task's grids stay inside its canvas (``augment.tables.fitting_scale``)."""
        self.groups: list[TaskGroup] = []
        grids: list[np.ndarray] = []
        next_id = 0
        for task, held_out in [(t, False) for t in train_tasks] + [(t, True) for t in held_out_tasks]:
            pairs = list(task.train)
            if not held_out:
                if not task.has_solutions:
                    raise ValueError(f"task {task.id}: a training task needs its test outputs")
                pairs += list(zip(task.test_inputs, task.test_outputs))
            pair_inputs = np.arange(len(grids), len(grids) + 2 * len(pairs), 2, dtype=np.int64)
            grids += [g for pair in pairs for g in pair]
            largest = max(max(g.shape) for g in [*(g for pair in pairs for g in pair), *task.test_inputs])
            group_canvas = canvas_for(largest, bucket_canvas, canvas)
            table = augmentation_table(task, num_aug, seed, fitting_scale(largest, group_canvas, max_scale))
            self.groups.append(TaskGroup(task, table, next_id, pair_inputs, held_out, group_canvas))
            next_id += len(table)
        self.num_ids = next_id
        self.pool = GridPool.from_grids(grids)
        self._first_ids = np.array([g.first_id for g in self.groups])

    @classmethod
    def from_config(cls, config: DataConfig) -> "PuzzleCatalogue":
        train = [(s, load_source(s)) for s in config.train_sources]
        held_out = [(s, load_source(s)) for s in config.held_out_sources]
        if config.evaluated_sources:
            evaluated = [t for s in config.evaluated_sources for t in load_source(s)]
            refuse_overlap(train + held_out, evaluated, config.evaluated_sources)
        return cls([t for _, ts in train for t in ts], [t for _, ts in held_out for t in ts], config.num_aug,
                   config.seed, canvas=config.canvas, bucket_canvas=config.bucket_canvas)

    def canvases(self) -> list[int]:
        """The distinct canvas sides of the groups, smallest first."""
        return sorted({g.canvas for g in self.groups})

    def held_out_groups(self) -> list[TaskGroup]:
        return [g for g in self.groups if g.held_out]

    def augmentation_of(self, puzzle_id: int) -> tuple[TaskGroup, Augmentation]:
        group = self.groups[int(np.searchsorted(self._first_ids, puzzle_id, side="right")) - 1]
        return group, group.table[puzzle_id - group.first_id]


@dataclass
class _Visit:
    """What one visit of a group contributes, before encoding."""

    inputs: np.ndarray     # (n,) pool index of each pair's input grid
    dihedral: int
    colour_map: np.ndarray  # (10,)
    scale: int
    puzzle_id: int
    uniform: np.ndarray    # (n, 2) draws for the translation, or None


class TrainStream:
    """An endless, deterministic stream of encoded training samples; ``take(n)`` returns the next n.

    Every random choice is drawn per visit from a generator seeded by (seed, epoch, visit), so the
    stream is the same however it is cut into batches, and resuming only needs the sample count.
    """

    def __init__(self, catalogue: PuzzleCatalogue, config: DataConfig, position: int = 0, canvas: int | None = None):
        """``canvas``: only the groups bucketed to this canvas (all groups when None)."""
        self.catalogue, self.config = catalogue, config
        self.canvas = canvas or config.canvas
        self._groups = [i for i, g in enumerate(catalogue.groups) if canvas is None or g.canvas == canvas]
        if not self._groups:
            raise ValueError(f"no task groups on a {self.canvas}-canvas")
        # Streams of different canvases draw independently; a single stream keeps the plain seeds.
        self._key = [] if canvas is None else [canvas]
        self.epoch, self._visit = 0, 0
        self._order = self._epoch_order()
        self._pending: list[tuple[_Visit, int]] = []  # (visit, pairs of it already handed out)
        self.consumed = 0
        self.skip(position)

    def _epoch_order(self) -> np.ndarray:
        order = np.random.default_rng([self.config.seed, self.epoch, *self._key]).permutation(len(self._groups))
        return np.array(self._groups)[order]

    def _next_visit(self) -> _Visit:
        if self._visit == len(self._order):
            self.epoch, self._visit = self.epoch + 1, 0
            self._order = self._epoch_order()
        group = self.catalogue.groups[self._order[self._visit]]
        rng = np.random.default_rng([self.config.seed, self.epoch, self._visit, *self._key])
        self._visit += 1
        version = int(rng.integers(len(group.table)))
        inputs = group.pair_inputs[rng.permutation(len(group.pair_inputs))]
        uniform = rng.random((len(inputs), 2)) if self.config.translate else None
        return _Visit(inputs, int(group.table.dihedrals[version]), group.table.colour_maps[version],
                      int(group.table.scales[version]), group.puzzle_id(version), uniform)

    def _plan(self, n: int) -> list[tuple[_Visit, int, int]]:
        """The next ``n`` samples as (visit, first pair, last pair) pieces."""
        pieces, have = [], 0
        while have < n:
            if not self._pending:
                self._pending.append((self._next_visit(), 0))
            visit, used = self._pending[0]
            count = min(len(visit.inputs) - used, n - have)
            pieces.append((visit, used, used + count))
            have += count
            if used + count == len(visit.inputs):
                self._pending.pop(0)
            else:
                self._pending[0] = (visit, used + count)
        return pieces

    def take(self, n: int) -> SampleBatch:
        pieces = self._plan(n)
        self.consumed += n
        inputs = np.concatenate([v.inputs[a:b] for v, a, b in pieces])
        counts = [b - a for _, a, b in pieces]
        dihedrals = np.repeat([v.dihedral for v, _, _ in pieces], counts)
        colour_maps = np.repeat(np.stack([v.colour_map for v, _, _ in pieces]), counts, axis=0)
        scales = np.repeat([v.scale for v, _, _ in pieces], counts)
        uniform = np.concatenate([v.uniform[a:b] for v, a, b in pieces]) if self.config.translate else None
        tokens_in, tokens_out, _ = encode_pairs(self.catalogue.pool, inputs, inputs + 1, dihedrals, colour_maps,
                                                self.canvas, uniform=uniform, scales=scales)
        puzzle_ids = np.repeat([v.puzzle_id for v, _, _ in pieces], counts).astype(np.int64)
        return SampleBatch(tokens_in, tokens_out, puzzle_ids)

    def skip(self, n: int) -> None:
        """Advance by ``n`` samples without encoding them (resuming a run at its position)."""
        self._plan(n)
        self.consumed += n
