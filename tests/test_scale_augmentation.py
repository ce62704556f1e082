"""Scale augmentation (``FinetuneConfig.max_scale``): upscaled task versions, from the augmentation value
through the tables, the encoding kernel and the training stream to a fine-tuned task's votes."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from arc_data import load_bundled
from arc_data.encoding import decode_grid, encode_grid
from augment.augmentation import Augmentation
from augment.kernels import GridPool, encode_batch, encode_batch_numpy, transformed_shapes
from augment.tables import augmentation_table, drawn_augmentation, fitting_scale
from augment.voting import Prediction, candidate_log_prob, vote
from pretrain.config import DataConfig
from pretrain.data import PuzzleCatalogue, TrainStream
from submission.config import FinetuneConfig, cpu, fresh_model_config
from submission.finetune import Network, prediction_views, solve_task_variants, task_catalogue
from tests.helpers import random_augmentations, random_grids, real_grids

CPU = torch.device("cpu")


def largest_side(task) -> int:
    return max(max(g.shape) for g in [*(g for pair in task.train for g in pair), *task.test_inputs])


@settings(max_examples=200, deadline=None)
@given(random_grids(max_side=10), random_augmentations(max_scale=3))
def test_an_upscaled_view_inverts_and_the_kernel_encodes_it_as_apply_does(grid, aug):
    out = aug.apply(grid)
    unscaled = Augmentation(aug.dihedral, aug.colours).apply(grid)
    assert out.shape == (unscaled.shape[0] * aug.scale, unscaled.shape[1] * aug.scale)
    assert np.array_equal(out[::aug.scale, ::aug.scale], unscaled)
    assert np.array_equal(aug.invert(out), grid)
    pool = GridPool.from_grids([grid])
    fast = encode_batch(pool, [0], [aug.dihedral], aug.colour_map[None], [(0, 0)], 30, scales=[aug.scale])
    assert np.array_equal(fast[0], encode_grid(out, 30))


def test_scaled_keys_round_trip_and_bad_ones_are_refused():
    aug = Augmentation(5, (0, 3, 1, 2, 9, 8, 7, 6, 5, 4), 2)
    assert aug.key == "d5-0312987654-x2" and Augmentation.from_key(aug.key) == aug
    assert Augmentation.from_key("d5-0312987654") == Augmentation(5, aug.colours)  # unscaled keys stay as before
    for bad in ("d5-0312987654-2", "d5-0312987654-x0", "d5-0312987654-x2-x2", "d5-0312987654-"):
        with pytest.raises(ValueError):
            Augmentation.from_key(bad)
    with pytest.raises(ValueError, match="no inverse"):
        aug.inverse()
    with pytest.raises(ValueError, match="scale"):
        Augmentation(0, scale=0)


def test_the_kernel_equals_its_numpy_twin_with_upscales(rng):
    grids = [g for g in real_grids()[::5] if max(g.shape) <= 10]
    pool = GridPool.from_grids(grids)
    n = 2000
    index, dihedrals, scales = rng.integers(0, len(pool), n), rng.integers(0, 8, n), rng.integers(1, 4, n)
    colour_maps = np.stack([np.concatenate([[0], rng.permutation(9) + 1]) for _ in range(n)])
    heights, widths = transformed_shapes(pool, index, dihedrals, scales)
    offsets = np.stack([rng.integers(0, 30 - heights + 1), rng.integers(0, 30 - widths + 1)], 1)
    fast = encode_batch(pool, index, dihedrals, colour_maps, offsets, 30, scales)
    assert np.array_equal(fast, encode_batch_numpy(pool, index, dihedrals, colour_maps, offsets, 30, scales))
    with pytest.raises(ValueError, match="outside"):  # a 10-side grid upscaled by 4 leaves the 30-canvas
        encode_batch(GridPool.from_grids([np.ones((10, 10), np.uint8)]), [0], [0], np.arange(10)[None], [(0, 0)], 30,
                     [4])


def test_tables_without_scale_are_the_tables_of_before_and_with_it_keep_each_draws_transform():
    task = load_bundled("arc-agi-1", "train")[0]
    assert set(augmentation_table(task, 60, seed=3).scales.tolist()) == {1}  # off by default
    for k in range(20):
        plain, scaled = drawn_augmentation(3, task.id, k), drawn_augmentation(3, task.id, k, max_scale=3)
        assert (scaled.dihedral, scaled.colours) == (plain.dihedral, plain.colours)
    table = augmentation_table(task, 60, seed=3, max_scale=3)
    assert table[0] == Augmentation() and len(table) == 60
    assert set(table.scales.tolist()) == {1, 2, 3}
    assert len({aug.key for aug in table}) == len(table)
    assert fitting_scale(largest_side=3, canvas=8, max_scale=3) == 2
    assert fitting_scale(largest_side=9, canvas=8, max_scale=3) == 1


def test_the_stream_trains_on_upscaled_demonstrations_that_stay_on_the_tasks_canvas():
    task = next(t for t in load_bundled("arc-agi-1", "train") if largest_side(t) <= 4)
    catalogue = PuzzleCatalogue([], [task.without_solutions()], 32, 0, canvas=8, max_scale=3)
    group = catalogue.groups[0]
    assert group.canvas == 8 and set(group.table.scales.tolist()) == {1, 2}  # 3 x 4 would not fit 8
    stream = TrainStream(catalogue, DataConfig(train_sources=(), held_out_sources=(), canvas=8, translate=False,
                                               seed=0))
    batch = stream.take(200)
    outputs = {(g.shape, g.tobytes()) for _, g in task.train}
    scaled_seen = 0
    for labels, puzzle_id in zip(batch.labels, batch.puzzle_ids):
        _, aug = catalogue.augmentation_of(int(puzzle_id))
        original = aug.invert(decode_grid(labels, 8))
        assert (original.shape, original.tobytes()) in outputs
        scaled_seen += aug.scale > 1
    assert scaled_seen > 20


def test_a_scaled_view_votes_for_its_grid_mapped_back_and_cannot_score_what_would_leave_its_canvas():
    truth = np.array([[1, 2], [3, 0]], dtype=np.uint8)
    scaled = Augmentation(1, scale=2)
    views = [Prediction(0, Augmentation(), truth), Prediction(0, scaled, scaled.apply(truth))]
    [candidate] = vote(views)
    assert candidate.votes == 2 and np.array_equal(candidate.grid, truth)
    log_probs = np.zeros((16, 12), dtype=np.float32)
    view = Prediction(0, scaled, scaled.apply(truth), log_probs=log_probs, canvas=4)
    assert candidate_log_prob(truth, view) == 0.0
    assert candidate_log_prob(np.ones((3, 3), np.uint8), view) is None  # 6 x 6 in the view's frame


def test_fine_tuning_with_scale_augmentation_predicts_scaled_views_on_a_real_task():
    task = next(t for t in load_bundled("arc-agi-1", "train") if largest_side(t) <= 4)
    network = Network.fresh_init(fresh_model_config())
    config = dataclasses.replace(cpu(), num_aug=16, views=16, steps=2, batch=8, inference_batch=32, max_scale=2)
    group = task_catalogue([task], network, config).groups[0]
    views = prediction_views(group, config, 8)
    assert 2 in {group.table[v].scale for v in views.version}
    outcome = solve_task_variants(task, network, config, {"base": {}}, CPU)["base"]
    assert not outcome.failed and sum(c["votes"] for c in outcome.evidence[0]) == len(views.version)
    with pytest.raises(ValueError, match="max_scale"):
        FinetuneConfig(max_scale=0)
