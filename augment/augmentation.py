"""Invertible augmentations: one of the 8 dihedral transforms and a permutation of colours 1..9.

An ``Augmentation`` is a small frozen value with a string key (``"d3-0912345678"``: dihedral 3,
then the colour each of 0..9 maps to) that travels with a sample so its prediction can be mapped back.
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


@dataclass(frozen=True)
class Augmentation:
    """Dihedral transform ``dihedral`` (0..7) after colour map ``colours`` (colour c -> colours[c], 0 -> 0)."""

    dihedral: int = 0
    colours: tuple[int, ...] = IDENTITY_COLOURS

    def __post_init__(self):
        if not (isinstance(self.dihedral, (int, np.integer)) and 0 <= self.dihedral < NUM_DIHEDRAL):
            raise ValueError(f"unknown dihedral transform {self.dihedral!r}; expected 0..7")
        colours = tuple(int(c) for c in self.colours)
        if sorted(colours) != list(range(10)) or colours[0] != 0:
            raise ValueError(f"colours {self.colours!r} is not a permutation of 0..9 that keeps 0")
        object.__setattr__(self, "dihedral", int(self.dihedral))
        object.__setattr__(self, "colours", colours)

    @property
    def key(self) -> str:
        return f"d{self.dihedral}-{''.join(map(str, self.colours))}"

    @classmethod
    def from_key(cls, key: str) -> "Augmentation":
        try:
            head, colours = key.split("-")
            if head[0] != "d" or len(colours) != 10:
                raise ValueError
            return cls(int(head[1:]), tuple(int(c) for c in colours))
        except (ValueError, IndexError):
            raise ValueError(f"{key!r} is not an augmentation key like 'd3-0912345678'") from None

    @property
    def colour_map(self) -> np.ndarray:
        return np.array(self.colours, dtype=np.uint8)

    def inverse(self) -> "Augmentation":
        """The augmentation that undoes this one.

        A colour map acts on values and a dihedral transform on positions, so the two commute and
        the inverse is again "dihedral after colour map", each part inverted.
        """
        inverse_colours = np.empty(10, dtype=np.uint8)
        inverse_colours[self.colour_map] = np.arange(10, dtype=np.uint8)
        return Augmentation(DIHEDRAL_INVERSE[self.dihedral], tuple(inverse_colours.tolist()))

    def apply(self, grid: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(dihedral(self.colour_map[grid], self.dihedral))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Map a grid in this augmentation's frame back to the original frame."""
        return self.inverse().apply(grid)

    def __repr__(self) -> str:
        return f"Augmentation({self.key!r})"


IDENTITY = Augmentation()
