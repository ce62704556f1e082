"""Small synthetic task families that a tiny model can learn on a CPU in minutes.

Each task applies one rule to random grids: a flip, a rotation, a colour map, or a 2x2 tiling. They
are the project's proof of life: a model that cannot learn these has a bug.
"""

from __future__ import annotations

import numpy as np

from arc_data.tasks import Task

FAMILIES = ("flip_lr", "flip_ud", "rot180", "transpose", "colour_map", "tile")


def _rule(family: str, rng: np.random.Generator):
    if family == "flip_lr":
        return lambda g: g[:, ::-1]
    if family == "flip_ud":
        return lambda g: g[::-1, :]
    if family == "rot180":
        return lambda g: g[::-1, ::-1]
    if family == "transpose":
        return lambda g: g.T
    if family == "colour_map":
        mapping = np.concatenate([[0], rng.permutation(9) + 1]).astype(np.uint8)
        return lambda g: mapping[g]
    if family == "tile":
        return lambda g: np.tile(g, (2, 2))
    raise ValueError(f"unknown synthetic family {family!r}")


def synthetic_tasks(count: int, seed: int = 0, *, max_side: int = 5, pairs: int = 3, tests: int = 1,
                    families: tuple[str, ...] = FAMILIES) -> list[Task]:
    """``count`` tasks cycling through ``families``; grids are 2..max_side a side (tiles double that)."""
    tasks = []
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        family = families[k % len(families)]
        rule = _rule(family, rng)
        side = max_side // 2 if family == "tile" else max_side
        grids = [rng.integers(0, 10, size=rng.integers(2, side + 1, size=2)).astype(np.uint8)
                 for _ in range(pairs + tests)]
        examples = [(g, np.ascontiguousarray(rule(g))) for g in grids]
        tasks.append(Task(f"synthetic-{seed}-{k:04d}-{family}", tuple(examples[:pairs]),
                          tuple(g for g, _ in examples[pairs:]), tuple(o for _, o in examples[pairs:])))
    return tasks
