"""The token encoding shared by TRM and HRM.

A grid sits at an offset inside a ``canvas x canvas`` field of PAD tokens; colour ``c`` becomes token
``c + 2``; EOS fills the row just below the grid and the column just right of it (not the corner,
and not where the grid touches the canvas edge), so the model predicts the output's size through
that border. A canvas is flattened row-major into ``canvas * canvas`` tokens.
"""

from __future__ import annotations

import numpy as np

PAD = 0
EOS = 1
COLOUR_OFFSET = 2
VOCAB_SIZE = 12
CANVAS = 30

# What a prediction with no colour cell at its origin decodes to: a valid 1x1 black grid.
FALLBACK_GRID = np.zeros((1, 1), dtype=np.uint8)


def encode_grid(grid: np.ndarray, canvas: int = CANVAS, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Tokens (``canvas * canvas``, uint8) of ``grid`` placed with its top-left cell at ``offset``."""
    rows, cols = grid.shape
    top, left = offset
    if not (0 <= top <= canvas - rows and 0 <= left <= canvas - cols):
        raise ValueError(f"a {rows}x{cols} grid does not fit a {canvas}-canvas at offset {offset}")
    tokens = np.full((canvas, canvas), PAD, dtype=np.uint8)
    tokens[top:top + rows, left:left + cols] = grid + COLOUR_OFFSET
    if top + rows < canvas:
        tokens[top + rows, left:left + cols] = EOS
    if left + cols < canvas:
        tokens[top:top + rows, left + cols] = EOS
    return tokens.reshape(-1)


def decode_shapes(tokens: np.ndarray, canvas: int = CANVAS, origins: np.ndarray | tuple[int, int] = (0, 0)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the grid each token row decodes to (0, 0 where it decodes to the fallback).

    The grid is the largest-area rectangle of colour tokens anchored at the row's origin whose every
    row, read from the left, is all colours up to the rectangle's width; ties go to fewer rows.
    ``origins`` is one ``(top, left)`` for all rows or an ``(N, 2)`` array, one per row.
    """
    fields = np.asarray(tokens).reshape(-1, canvas, canvas)
    is_colour = (fields >= COLOUR_OFFSET) & (fields < COLOUR_OFFSET + 10)
    origins = np.broadcast_to(np.asarray(origins, dtype=np.int64).reshape(-1, 2), (len(fields), 2))
    # Shift every field so its origin is at (0, 0); cells shifted in from past the edge are not colours.
    steps = np.arange(canvas)
    rows = origins[:, 0, None] + steps  # (N, canvas)
    cols = origins[:, 1, None] + steps
    inside = (rows < canvas)[:, :, None] & (cols < canvas)[:, None, :]
    shifted = is_colour[np.arange(len(fields))[:, None, None], np.minimum(rows, canvas - 1)[:, :, None],
                        np.minimum(cols, canvas - 1)[:, None, :]] & inside
    # Length of the colour run at the start of each row, then the usable width of the first r rows.
    run = np.where(shifted.all(axis=2), canvas, np.argmin(shifted, axis=2))
    width = np.minimum.accumulate(run, axis=1)
    area = width * (steps + 1)
    best = np.argmax(area, axis=1)  # the first maximum: the fewest rows
    found = area.max(axis=1) > 0
    return np.where(found, best + 1, 0), np.where(found, width[np.arange(len(fields)), best], 0)


def decode_grids(tokens: np.ndarray, canvas: int = CANVAS, origins: np.ndarray | tuple[int, int] = (0, 0)
                 ) -> list[np.ndarray]:
    """Decode a batch of token rows ``(N, canvas * canvas)`` into grids (see ``decode_shapes``).

    A row with no colour token at its origin decodes to ``FALLBACK_GRID``: never an exception.
    """
    fields = np.asarray(tokens).reshape(-1, canvas, canvas)
    heights, widths = decode_shapes(fields, canvas, origins)
    origins = np.broadcast_to(np.asarray(origins, dtype=np.int64).reshape(-1, 2), (len(fields), 2))
    grids = []
    for field, (top, left), h, w in zip(fields, origins, heights, widths):
        if h == 0:
            grids.append(FALLBACK_GRID.copy())
        else:
            grids.append((field[top:top + h, left:left + w] - COLOUR_OFFSET).astype(np.uint8))
    return grids


def decode_grid(tokens: np.ndarray, canvas: int = CANVAS, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Decode one token row; see ``decode_grids``."""
    return decode_grids(np.asarray(tokens).reshape(1, -1), canvas, origin)[0]
