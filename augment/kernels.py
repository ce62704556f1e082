"""Bulk encoding of (grid, augmentation, offset) triples into token rows.

``encode_batch`` is the fast path: one numba kernel call writes N canvases. ``encode_batch_numpy``
is its plain NumPy twin (``Augmentation.apply`` then ``encode_grid`` per sample); the tests compare
the two bit for bit and the benchmark times one against the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from arc_data.encoding import COLOUR_OFFSET, EOS, PAD, encode_grid
from augment.augmentation import dihedral


@dataclass(frozen=True)
class GridPool:
    """Many grids packed into one flat buffer, addressed by index."""

    cells: np.ndarray    # (total cells,) uint8, row-major grids one after another
    starts: np.ndarray   # (num grids,) int64, where each grid begins in ``cells``
    heights: np.ndarray  # (num grids,) int64
    widths: np.ndarray   # (num grids,) int64

    @classmethod
    def from_grids(cls, grids: list[np.ndarray]) -> "GridPool":
        heights = np.array([g.shape[0] for g in grids], dtype=np.int64)
        widths = np.array([g.shape[1] for g in grids], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(heights * widths)[:-1]]).astype(np.int64)
        cells = np.concatenate([g.reshape(-1) for g in grids]).astype(np.uint8)
        return cls(cells, starts, heights, widths)

    def grid(self, index: int) -> np.ndarray:
        h, w, s = self.heights[index], self.widths[index], self.starts[index]
        return self.cells[s:s + h * w].reshape(h, w)

    def __len__(self) -> int:
        return len(self.starts)


# Which dihedral transforms swap rows and columns (rot90, rot270, transpose, anti-transpose).
_SWAPS_AXES = np.array([False, True, False, True, False, False, True, True])


def transformed_shapes(pool: GridPool, grid_index: np.ndarray, dihedrals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heights and widths of the selected grids after their dihedral transforms."""
    swap = _SWAPS_AXES[np.asarray(dihedrals, dtype=np.int64)]
    h, w = pool.heights[grid_index], pool.widths[grid_index]
    return np.where(swap, w, h), np.where(swap, h, w)


def offsets_from_uniform(uniform: np.ndarray, heights: np.ndarray, widths: np.ndarray, canvas: int) -> np.ndarray:
    """A uniformly random top-left offset per grid that keeps a ``heights x widths`` grid inside the
    canvas, from draws in [0, 1) of shape (N, 2). For an input/output pair pass the larger of the two
    sizes: both share the offset. The draws can be made before a grid's transformed size is known,
    so a stream stays the same however it is cut into batches."""
    if np.any(heights > canvas) or np.any(widths > canvas):
        raise ValueError(f"a grid is larger than the {canvas}-canvas")
    top = np.floor(uniform[:, 0] * (canvas - heights + 1))
    left = np.floor(uniform[:, 1] * (canvas - widths + 1))
    return np.stack([top, left], axis=1).astype(np.int64)


def encode_batch(pool: GridPool, grid_index: np.ndarray, dihedrals: np.ndarray, colour_maps: np.ndarray,
                 offsets: np.ndarray, canvas: int) -> np.ndarray:
    """Token rows ``(N, canvas * canvas)`` uint8 for grid ``grid_index[i]`` under dihedral
    ``dihedrals[i]`` and colour map ``colour_maps[i]``, placed at ``offsets[i] = (top, left)``."""
    grid_index, dihedrals, colour_maps, offsets = _checked(pool, grid_index, dihedrals, colour_maps, offsets, canvas)
    out = np.empty((len(grid_index), canvas * canvas), dtype=np.uint8)
    _encode_kernel(pool.cells, pool.starts, pool.heights, pool.widths, grid_index, dihedrals, colour_maps,
                   offsets, canvas, out)
    return out


def encode_pairs(pool: GridPool, inputs: np.ndarray, outputs: np.ndarray, dihedrals: np.ndarray,
                 colour_maps: np.ndarray, canvas: int, rng: np.random.Generator | None = None,
                 uniform: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode input/output pairs under the same augmentation and the same offset.

    With ``rng`` (or ready-made ``uniform`` draws, see ``offsets_from_uniform``) every pair gets a
    random translation that keeps both grids inside the canvas; without, both sit at the top-left
    corner (offset (0, 0), as at inference). Returns ``(input_tokens, label_tokens, offsets)``.
    """
    if rng is not None:
        uniform = rng.random((len(inputs), 2))
    if uniform is None:
        offsets = np.zeros((len(inputs), 2), dtype=np.int64)
    else:
        in_h, in_w = transformed_shapes(pool, inputs, dihedrals)
        out_h, out_w = transformed_shapes(pool, outputs, dihedrals)
        offsets = offsets_from_uniform(uniform, np.maximum(in_h, out_h), np.maximum(in_w, out_w), canvas)
    return (encode_batch(pool, inputs, dihedrals, colour_maps, offsets, canvas),
            encode_batch(pool, outputs, dihedrals, colour_maps, offsets, canvas), offsets)


def encode_batch_numpy(pool: GridPool, grid_index: np.ndarray, dihedrals: np.ndarray, colour_maps: np.ndarray,
                       offsets: np.ndarray, canvas: int) -> np.ndarray:
    """The NumPy twin of ``encode_batch``: same arguments, same result, one sample at a time."""
    grid_index, dihedrals, colour_maps, offsets = _checked(pool, grid_index, dihedrals, colour_maps, offsets, canvas)
    out = np.empty((len(grid_index), canvas * canvas), dtype=np.uint8)
    for i, g in enumerate(grid_index):
        grid = dihedral(colour_maps[i][pool.grid(g)], int(dihedrals[i]))
        out[i] = encode_grid(grid, canvas, (int(offsets[i, 0]), int(offsets[i, 1])))
    return out


def _checked(pool, grid_index, dihedrals, colour_maps, offsets, canvas):
    grid_index = np.ascontiguousarray(grid_index, dtype=np.int64)
    dihedrals = np.ascontiguousarray(dihedrals, dtype=np.int64)
    colour_maps = np.ascontiguousarray(colour_maps, dtype=np.uint8).reshape(-1, 10)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = len(grid_index)
    if not (len(dihedrals) == len(colour_maps) == len(offsets) == n):
        raise ValueError("grid_index, dihedrals, colour_maps and offsets must have one entry per sample")
    if n and (grid_index.min() < 0 or grid_index.max() >= len(pool)):
        raise ValueError("grid_index out of range of the pool")
    if n and (dihedrals.min() < 0 or dihedrals.max() > 7):
        raise ValueError("dihedral ids must be in 0..7")
    heights, widths = transformed_shapes(pool, grid_index, dihedrals)
    top, left = offsets[:, 0], offsets[:, 1]
    if n and (np.any(top < 0) or np.any(left < 0) or np.any(top + heights > canvas)
              or np.any(left + widths > canvas)):
        raise ValueError(f"an offset places a grid outside the {canvas}-canvas")
    return grid_index, dihedrals, colour_maps, offsets


@numba.njit(cache=True, nogil=True)
def _source_strides(which, h, w):
    """Cell (r, c) of the transformed grid is cell ``first + r * row_step + c * col_step`` of the
    flattened h x w original (see ``dihedral`` for the transforms)."""
    if which == 0:
        return 0, w, 1
    if which == 1:  # rot90 counter-clockwise: (c, w-1-r)
        return w - 1, -1, w
    if which == 2:  # rot180: (h-1-r, w-1-c)
        return h * w - 1, -w, -1
    if which == 3:  # rot270: (h-1-c, r)
        return (h - 1) * w, 1, -w
    if which == 4:  # flip left-right: (r, w-1-c)
        return w - 1, w, -1
    if which == 5:  # flip up-down: (h-1-r, c)
        return (h - 1) * w, -w, 1
    if which == 6:  # transpose: (c, r)
        return 0, 1, w
    return h * w - 1, -1, -w  # anti-transpose: (h-1-c, w-1-r)


@numba.njit(cache=True, nogil=True)
def _encode_kernel(cells, starts, heights, widths, grid_index, dihedrals, colour_maps, offsets, canvas, out):
    for i in range(len(grid_index)):
        g = grid_index[i]
        h, w, which = heights[g], widths[g], dihedrals[i]
        swap = which == 1 or which == 3 or which == 6 or which == 7
        rows, cols = (w, h) if swap else (h, w)
        first, row_step, col_step = _source_strides(which, h, w)
        first += starts[g]
        top, left = offsets[i, 0], offsets[i, 1]
        for k in range(canvas * canvas):
            out[i, k] = PAD
        for r in range(rows):
            base = (top + r) * canvas + left
            src = first + r * row_step
            for c in range(cols):
                out[i, base + c] = colour_maps[i, cells[src + c * col_step]] + COLOUR_OFFSET
        if top + rows < canvas:
            base = (top + rows) * canvas + left
            for c in range(cols):
                out[i, base + c] = EOS
        if left + cols < canvas:
            for r in range(rows):
                out[i, (top + r) * canvas + left + cols] = EOS
