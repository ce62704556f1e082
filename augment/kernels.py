"""Bulk encoding of (grid, augmentation, offset) triples into token rows.

An augmentation here is a dihedral id, a colour map and (optionally, ``scales``) an upscale factor;
``scales=None`` means no upscale anywhere.

``encode_batch`` is the fast path: one numba kernel call writes N canvases. ``encode_batch_numpy``
is its plain NumPy twin (``Augmentation.apply`` then ``encode_grid`` per sample); the tests compare
the two bit for bit and the benchmark times one against the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from arc_data.encoding import COLOUR_OFFSET, EOS, PAD, encode_grid
from augment.augmentation import dihedral, upscale


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


def transformed_shapes(pool: GridPool, grid_index: np.ndarray, dihedrals: np.ndarray,
                       scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heights and widths of the selected grids after their dihedral transforms and upscales."""
    swap = _SWAPS_AXES[np.asarray(dihedrals, dtype=np.int64)]
    h, w = pool.heights[grid_index], pool.widths[grid_index]
    scale = 1 if scales is None else np.asarray(scales, dtype=np.int64)
    return np.where(swap, w, h) * scale, np.where(swap, h, w) * scale


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
                 offsets: np.ndarray, canvas: int, scales: np.ndarray | None = None) -> np.ndarray:
    """Token rows ``(N, canvas * canvas)`` uint8 for grid ``grid_index[i]`` under colour map
    ``colour_maps[i]``, dihedral ``dihedrals[i]`` and upscale ``scales[i]``, placed at
    ``offsets[i] = (top, left)``."""
    grid_index, dihedrals, colour_maps, offsets, scales = _checked(pool, grid_index, dihedrals, colour_maps,
                                                                   offsets, canvas, scales)
    out = np.empty((len(grid_index), canvas * canvas), dtype=np.uint8)
    _encode_kernel(pool.cells, pool.starts, pool.heights, pool.widths, grid_index, dihedrals, colour_maps,
                   scales, offsets, canvas, out)
    return out


def encode_pairs(pool: GridPool, inputs: np.ndarray, outputs: np.ndarray, dihedrals: np.ndarray,
                 colour_maps: np.ndarray, canvas: int, rng: np.random.Generator | None = None,
                 uniform: np.ndarray | None = None,
                 scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        in_h, in_w = transformed_shapes(pool, inputs, dihedrals, scales)
        out_h, out_w = transformed_shapes(pool, outputs, dihedrals, scales)
        offsets = offsets_from_uniform(uniform, np.maximum(in_h, out_h), np.maximum(in_w, out_w), canvas)
    return (encode_batch(pool, inputs, dihedrals, colour_maps, offsets, canvas, scales),
            encode_batch(pool, outputs, dihedrals, colour_maps, offsets, canvas, scales), offsets)


def encode_batch_numpy(pool: GridPool, grid_index: np.ndarray, dihedrals: np.ndarray, colour_maps: np.ndarray,
                       offsets: np.ndarray, canvas: int, scales: np.ndarray | None = None) -> np.ndarray:
    """The NumPy twin of ``encode_batch``: same arguments, same result, one sample at a time."""
    grid_index, dihedrals, colour_maps, offsets, scales = _checked(pool, grid_index, dihedrals, colour_maps,
                                                                   offsets, canvas, scales)
    out = np.empty((len(grid_index), canvas * canvas), dtype=np.uint8)
    for i, g in enumerate(grid_index):
        grid = upscale(dihedral(colour_maps[i][pool.grid(g)], int(dihedrals[i])), int(scales[i]))
        out[i] = encode_grid(grid, canvas, (int(offsets[i, 0]), int(offsets[i, 1])))
    return out


def _checked(pool, grid_index, dihedrals, colour_maps, offsets, canvas, scales):
    grid_index = np.ascontiguousarray(grid_index, dtype=np.int64)
    dihedrals = np.ascontiguousarray(dihedrals, dtype=np.int64)
    colour_maps = np.ascontiguousarray(colour_maps, dtype=np.uint8).reshape(-1, 10)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = len(grid_index)
    scales = np.ones(n, dtype=np.int64) if scales is None else np.ascontiguousarray(scales, dtype=np.int64)
    if not (len(dihedrals) == len(colour_maps) == len(offsets) == len(scales) == n):
        raise ValueError("grid_index, dihedrals, colour_maps, offsets and scales must have one entry per sample")
    if n and (grid_index.min() < 0 or grid_index.max() >= len(pool)):
        raise ValueError("grid_index out of range of the pool")
    if n and (dihedrals.min() < 0 or dihedrals.max() > 7):
        raise ValueError("dihedral ids must be in 0..7")
    if n and scales.min() < 1:
        raise ValueError("upscale factors must be at least 1")
    heights, widths = transformed_shapes(pool, grid_index, dihedrals, scales)
    top, left = offsets[:, 0], offsets[:, 1]
    if n and (np.any(top < 0) or np.any(left < 0) or np.any(top + heights > canvas)
              or np.any(left + widths > canvas)):
        raise ValueError(f"an offset places a grid outside the {canvas}-canvas")
    return grid_index, dihedrals, colour_maps, offsets, scales


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
def _encode_kernel(cells, starts, heights, widths, grid_index, dihedrals, colour_maps, scales, offsets, canvas, out):
    for i in range(len(grid_index)):
        g = grid_index[i]
        h, w, which, scale = heights[g], widths[g], dihedrals[i], scales[i]
        swap = which == 1 or which == 3 or which == 6 or which == 7
        rows, cols = (w, h) if swap else (h, w)
        first, row_step, col_step = _source_strides(which, h, w)
        first += starts[g]
        top, left = offsets[i, 0], offsets[i, 1]
        for k in range(canvas * canvas):
            out[i, k] = PAD
        if scale == 1:  # the common case, kept free of the block loops (2x faster)
            for r in range(rows):
                base = (top + r) * canvas + left
                src = first + r * row_step
                for c in range(cols):
                    out[i, base + c] = colour_maps[i, cells[src + c * col_step]] + COLOUR_OFFSET
        else:
            for r in range(rows):
                src = first + r * row_step
                for c in range(cols):
                    token = colour_maps[i, cells[src + c * col_step]] + COLOUR_OFFSET
                    for dr in range(scale):  # the cell's scale x scale block
                        base = (top + r * scale + dr) * canvas + left + c * scale
                        for dc in range(scale):
                            out[i, base + dc] = token
            rows, cols = rows * scale, cols * scale
        if top + rows < canvas:
            base = (top + rows) * canvas + left
            for c in range(cols):
                out[i, base + c] = EOS
        if left + cols < canvas:
            for r in range(rows):
                out[i, (top + r) * canvas + left + cols] = EOS
