import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arc_data.encoding import (CANVAS, EOS, FALLBACK_GRID, PAD, VOCAB_SIZE, decode_grid, decode_grids,
                               decode_shapes, encode_grid)
from augment.kernels import GridPool, encode_batch
from tests.helpers import real_grids


def test_encoding_layout_by_hand():
    grid = np.array([[0, 9], [3, 4]], dtype=np.uint8)
    field = encode_grid(grid, canvas=5, offset=(1, 2)).reshape(5, 5)
    expected = np.array([[0, 0, 0, 0, 0],
                         [0, 0, 2, 11, 1],
                         [0, 0, 5, 6, 1],
                         [0, 0, 1, 1, 0],   # EOS row below the grid; the corner stays PAD
                         [0, 0, 0, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(field, expected)


def test_eos_is_omitted_where_the_grid_touches_the_canvas_edge():
    field = encode_grid(np.ones((3, 4), np.uint8), canvas=5, offset=(2, 1)).reshape(5, 5)
    assert (field[2:, 1:5] == 3).all()            # touches bottom and right: no EOS at all
    assert not (field == EOS).any()
    full = encode_grid(np.zeros((30, 30), np.uint8))
    assert (full == 2).all()


def test_offsets_that_do_not_fit_raise():
    with pytest.raises(ValueError, match="does not fit"):
        encode_grid(np.ones((3, 3), np.uint8), canvas=5, offset=(3, 0))


def test_decoder_falls_back_instead_of_raising():
    assert np.array_equal(decode_grid(np.zeros(CANVAS * CANVAS, np.uint8)), FALLBACK_GRID)
    eos_first = encode_grid(np.ones((2, 2), np.uint8))
    eos_first[0] = EOS
    assert np.array_equal(decode_grid(eos_first), FALLBACK_GRID)


def test_decoder_takes_the_largest_rectangle():
    field = np.full((6, 6), PAD, np.uint8)
    field[0, :5] = 3      # one long row
    field[1:4, :2] = 4    # a taller, narrower block below: 4 rows x 2 columns beats 1 x 5
    grid = decode_grid(field.reshape(-1), canvas=6)
    assert grid.shape == (4, 2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=100, max_size=100))
def test_decoder_never_raises_on_any_prediction(tokens):
    grid = decode_grid(np.array(tokens, np.uint8), canvas=10)
    assert grid.dtype == np.uint8 and grid.ndim == 2 and 1 <= min(grid.shape) and max(grid.shape) <= 10
    assert grid.max() <= 9


def check_round_trip_at_every_legal_offset(grids) -> int:
    """Every offset that keeps each grid on the 30-canvas: the decoded shape is exact, and full
    decodes of a subsample give the grid back. Returns the placements checked."""
    pool = GridPool.from_grids(list(grids))
    checked = 0
    for index, grid in enumerate(grids):
        rows, cols = grid.shape
        top, left = np.meshgrid(np.arange(CANVAS - rows + 1), np.arange(CANVAS - cols + 1), indexing="ij")
        offsets = np.stack([top.ravel(), left.ravel()], axis=1)
        n = len(offsets)
        tokens = encode_batch(pool, np.full(n, index), np.zeros(n), np.tile(np.arange(10), (n, 1)), offsets, CANVAS)
        heights, widths = decode_shapes(tokens, CANVAS, offsets)
        assert (heights == rows).all() and (widths == cols).all(), f"grid {index} {grid.shape}"
        for k in (0, n - 1, n // 2):
            assert np.array_equal(decode_grids(tokens[k], CANVAS, offsets[k])[0], grid)
        checked += n
    return checked


def test_round_trip_of_a_sample_of_real_grids_at_every_legal_offset():
    """Every 10th distinct real grid, plus the smallest and the largest (the full sweep is slow)."""
    grids = real_grids()
    by_size = sorted(grids, key=lambda g: g.size)
    sample = list(grids[::10]) + [by_size[0], by_size[-1]]
    assert check_round_trip_at_every_legal_offset(sample) > 300_000


@pytest.mark.slow
def test_round_trip_of_every_real_grid_at_every_legal_offset():
    grids = real_grids()
    assert len(grids) > 9000 and check_round_trip_at_every_legal_offset(grids) > 3_500_000
