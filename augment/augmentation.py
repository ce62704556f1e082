"""Invertible augmentations: one of the 8 dihedral transforms, a permutation of colours 1..9 and,
optionally, an integer upscale (every cell becomes an s x s block, as VARC's scale augmentation).

An ``Augmentation`` is a small frozen value with a string key (``"d3-0912345678"``: dihedral 3,
then the colour each of 0..9 maps to; ``"d3-0912345678-x2"`` when upscaled by 2) that travels with a
sample so its prediction can be mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_DIHEDRAL = 8
DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "anti_transpose")
# rot90 and rot270 undo each other; every other transform is its own inverse.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_COLOURS = tuple(range(10))


def dihedral(grid: np.ndarray, which: int) -> np.ndarray:
    """Apply dihedral transform ``which`` (0..7, see ``DIHEDRAL_NAMES``); rotations are counter-clockwise."""
    if which == 0:
        return grid
    if which == 1:
        return np.rot90(grid, 1)
    if which == 2:
        return np.rot90(grid, 2)
    if which == 3:
        return np.rot90(grid, 3)
    if which == 4:
        return grid[:, ::-1]
    if which == 5:
        return grid[::-1, :]
    if which == 6:
        return grid.T
    if which == 7:
        return np.rot90(grid, 2).T
    raise ValueError(f"unknown dihedral transform {which}; expected 0..7")


def upscale(grid: np.ndarray, scale: int) -> np.ndarray:
    """Every cell of ``grid`` as a ``scale`` x ``scale`` block."""
    return grid if scale == 1 else np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def downscale(grid: np.ndarray, scale: int) -> np.ndarray:
    """The top-left cell of every ``scale`` x ``scale`` block: ``upscale``'s inverse. A grid that is
    not a clean upscale (a prediction can be anything) still maps to one grid, which the vote weighs."""
    return grid if scale == 1 else grid[::scale, ::scale]


@dataclass(frozen=True)
class Augmentation:
    """Colour map ``colours`` (colour c -> colours[c], 0 -> 0), then dihedral transform ``dihedral``
    (0..7), then an upscale by ``scale`` (1: none)."""

    dihedral: int = 0
    colours: tuple[int, ...] = IDENTITY_COLOURS
    scale: int = 1

    def __post_init__(self):
        if not (isinstance(self.dihedral, (int, np.integer)) and 0 <= self.dihedral < NUM_DIHEDRAL):
            raise ValueError(f"unknown dihedral transform {self.dihedral!r}; expected 0..7")
        colours = tuple(int(c) for c in self.colours)
        if sorted(colours) != list(range(10)) or colours[0] != 0:
            raise ValueError(f"colours {self.colours!r} is not a permutation of 0..9 that keeps 0")
        if not (isinstance(self.scale, (int, np.integer)) and self.scale >= 1):
            raise ValueError(f"scale {self.scale!r} is not a whole number of at least 1")
        object.__setattr__(self, "dihedral", int(self.dihedral))
        object.__setattr__(self, "colours", colours)
        object.__setattr__(self, "scale", int(self.scale))

    @property
    def key(self) -> str:
        key = f"d{self.dihedral}-{''.join(map(str, self.colours))}"
        return key if self.scale == 1 else f"{key}-x{self.scale}"

    @classmethod
    def from_key(cls, key: str) -> "Augmentation":
        try:
            head, colours, *scale = key.split("-")
            if head[0] != "d" or len(colours) != 10 or len(scale) > 1 or (scale and scale[0][0] != "x"):
                raise ValueError
            return cls(int(head[1:]), tuple(int(c) for c in colours), int(scale[0][1:]) if scale else 1)
        except (ValueError, IndexError):
            raise ValueError(f"{key!r} is not an augmentation key like 'd3-0912345678' or 'd3-0912345678-x2'") from None

    @property
    def colour_map(self) -> np.ndarray:
        return np.array(self.colours, dtype=np.uint8)

    def inverse(self) -> "Augmentation":
        """The augmentation that undoes this one.

        A colour map acts on values and a dihedral transform on positions, so the two commute and
        the inverse is again "dihedral after colour map", each part inverted. An upscale's inverse
        is a downscale, which no ``Augmentation`` is: ``invert`` does it.
        """
        if self.scale != 1:
            raise ValueError(f"{self.key}: an upscaled augmentation has no inverse augmentation; use invert")
        inverse_colours = np.empty(10, dtype=np.uint8)
        inverse_colours[self.colour_map] = np.arange(10, dtype=np.uint8)
        return Augmentation(DIHEDRAL_INVERSE[self.dihedral], tuple(inverse_colours.tolist()))

    def apply(self, grid: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(upscale(dihedral(self.colour_map[grid], self.dihedral), self.scale))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Map a grid in this augmentation's frame back to the original frame."""
        unscaled = Augmentation(self.dihedral, self.colours)
        return unscaled.inverse().apply(downscale(grid, self.scale))

    def __repr__(self) -> str:
        return f"Augmentation({self.key!r})"


IDENTITY = Augmentation()
