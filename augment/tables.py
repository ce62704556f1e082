"""Deterministic per-task augmentation tables.

For a task, ``num_aug`` and a seed, the table lists the identity first and then distinct augmented
versions, deduplicated on the transformed task's content (train pairs and test inputs), as the
reference builder does: a task symmetric under a flip, or one that uses few colours, has fewer
distinct versions than ``num_aug`` and gets a shorter table.

Candidate ``k`` of a task is drawn from a BLAKE2b hash of ``(seed, task id, k)``, not from a library
random generator, so a table is the same on every machine, every run and every NumPy version.

With ``max_scale`` above 1 (scale augmentation, off by default) a candidate is also upscaled by a
factor drawn uniformly from 1..max_scale; the hash bytes that choose the dihedral transform and the
colours are the same, so a table with ``max_scale=1`` is the table of before.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from arc_data.tasks import Task
from augment.augmentation import NUM_DIHEDRAL, Augmentation, dihedral

MAX_AUGMENTATIONS = 1000
# Draws allowed per requested version before giving up on finding more distinct ones.
DRAWS_PER_VERSION = 4
_PERMUTATIONS_OF_9 = math.factorial(9)


@dataclass(frozen=True)
class AugmentationTable:
    """Row ``i`` is augmentation ``i`` of the task: arrays ready for the encoding kernels."""

    dihedrals: np.ndarray    # (n,) int8
    colour_maps: np.ndarray  # (n, 10) uint8, colour c -> colour_maps[i, c]
    scales: np.ndarray       # (n,) int8, the upscale factor (1: none)

    def __len__(self) -> int:
        return len(self.dihedrals)

    def __getitem__(self, i: int) -> Augmentation:
        return Augmentation(int(self.dihedrals[i]), tuple(self.colour_maps[i].tolist()), int(self.scales[i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @classmethod
    def from_augmentations(cls, augmentations: list[Augmentation]) -> "AugmentationTable":
        return cls(np.array([a.dihedral for a in augmentations], dtype=np.int8),
                   np.array([a.colours for a in augmentations], dtype=np.uint8).reshape(-1, 10),
                   np.array([a.scale for a in augmentations], dtype=np.int8))


def drawn_augmentation(seed: int, task_id: str, k: int, max_scale: int = 1) -> Augmentation:
    """Candidate ``k`` for a task: a dihedral transform, a permutation of colours 1..9 and an upscale
    factor in 1..max_scale."""
    digest = hashlib.blake2b(f"{seed}/{task_id}/{k}".encode(), digest_size=16).digest()
    which = digest[0] % NUM_DIHEDRAL
    scale = 1 + digest[1] % max_scale
    rank = int.from_bytes(digest[8:], "little") % _PERMUTATIONS_OF_9
    return Augmentation(which, (0, *_unrank_permutation(rank, list(range(1, 10)))), scale)


def fitting_scale(largest_side: int, canvas: int, max_scale: int) -> int:
    """The largest upscale factor up to ``max_scale`` that keeps a task whose grids are at most
    ``largest_side`` on a side inside a ``canvas`` x ``canvas`` canvas: scale augmentation never
    makes a task run on a larger canvas, so it costs no time per sample."""
    return max(1, min(max_scale, canvas // largest_side))


def _unrank_permutation(rank: int, items: list[int]) -> list[int]:
    """The permutation of ``items`` with lexicographic index ``rank`` (factorial number system)."""
    out = []
    for position in range(len(items), 0, -1):
        index, rank = divmod(rank, math.factorial(position - 1))
        out.append(items.pop(index))
    return out


def augmentation_table(task: Task, num_aug: int, seed: int = 0, max_scale: int = 1) -> AugmentationTable:
    """Up to ``num_aug`` distinct augmentations of ``task``, the identity first, each upscaled by at
    most ``max_scale``."""
    if not 1 <= num_aug <= MAX_AUGMENTATIONS:
        raise ValueError(f"num_aug must be in 1..{MAX_AUGMENTATIONS}, got {num_aug}")
    if max_scale < 1:
        raise ValueError(f"max_scale must be at least 1, got {max_scale}")
    views = _TaskViews(task)
    chosen = [Augmentation()]
    seen = {views.content(chosen[0])}
    for k in range(num_aug * DRAWS_PER_VERSION):
        if len(chosen) == num_aug:
            break
        candidate = drawn_augmentation(seed, task.id, k, max_scale)
        content = views.content(candidate)
        if content not in seen:
            seen.add(content)
            chosen.append(candidate)
    return AugmentationTable.from_augmentations(chosen)


class _TaskViews:
    """The task's grids under each dihedral transform, flattened once, so the content of any
    augmentation is one colour lookup over a single array."""

    def __init__(self, task: Task):
        grids = [g for pair in task.train for g in pair] + list(task.test_inputs)
        self._cells = []
        self._shapes = []
        for which in range(NUM_DIHEDRAL):
            transformed = [dihedral(g, which) for g in grids]
            self._cells.append(np.concatenate([g.reshape(-1) for g in transformed]))
            self._shapes.append(np.array([g.shape for g in transformed], dtype=np.int16).tobytes())

    def content(self, augmentation: Augmentation) -> bytes:
        """The transformed task's shapes and cells; an upscaled version's has its factor in front,
        one byte longer than any unscaled version's, so the two never collide."""
        cells = augmentation.colour_map[self._cells[augmentation.dihedral]]
        content = self._shapes[augmentation.dihedral] + cells.tobytes()
        return content if augmentation.scale == 1 else bytes((augmentation.scale,)) + content
