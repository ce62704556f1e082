import numpy as np

from arc_data.encoding import decode_grids
from arc_data.synthetic import synthetic_tasks
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream


def small_catalogue(translate=True):
    config = DataConfig(train_sources=(), held_out_sources=(), num_aug=6, canvas=12, translate=translate)
    return PuzzleCatalogue(synthetic_tasks(12, seed=0), synthetic_tasks(4, seed=1), 6, 0), config


def test_puzzle_ids_cover_every_version_once():
    catalogue, _ = small_catalogue()
    ids = [g.puzzle_id(v) for g in catalogue.groups for v in range(len(g.table))]
    assert ids == list(range(catalogue.num_ids))
    group, aug = catalogue.augmentation_of(catalogue.groups[3].first_id + 2)
    assert group is catalogue.groups[3] and aug == group.table[2]


def test_held_out_tasks_train_on_demonstrations_only():
    catalogue, _ = small_catalogue()
    for group in catalogue.groups:
        extra = 0 if group.held_out else len(group.task.test_inputs)
        assert len(group.pair_inputs) == len(group.task.train) + extra
    assert len(catalogue.held_out_groups()) == 4


def test_stream_is_the_same_however_it_is_cut_and_resumes_by_count():
    catalogue, config = small_catalogue()
    whole = TrainStream(catalogue, config).take(500)
    pieces = TrainStream(catalogue, config)
    parts = [pieces.take(n) for n in (1, 7, 92, 400)]
    assert np.array_equal(np.concatenate([p.inputs for p in parts]), whole.inputs)
    assert np.array_equal(np.concatenate([p.labels for p in parts]), whole.labels)
    assert np.array_equal(np.concatenate([p.puzzle_ids for p in parts]), whole.puzzle_ids)
    resumed = TrainStream(catalogue, config, position=321).take(50)
    assert np.array_equal(resumed.inputs, whole.inputs[321:371])


def test_samples_are_the_augmented_pairs_they_claim_to_be():
    catalogue, config = small_catalogue(translate=False)
    batch = TrainStream(catalogue, config).take(200)
    for inputs, labels, puzzle_id in zip(batch.inputs[:60], batch.labels[:60], batch.puzzle_ids[:60]):
        group, aug = catalogue.augmentation_of(int(puzzle_id))
        original_in, original_out = (aug.invert(g) for g in decode_grids(np.stack([inputs, labels]), 12))
        pairs = list(group.task.train) + list(zip(group.task.test_inputs, group.task.test_outputs or ()))
        assert any(np.array_equal(original_in, a) and np.array_equal(original_out, b) for a, b in pairs)


def test_translation_moves_samples_and_every_epoch_visits_every_group():
    catalogue, config = small_catalogue()
    stream = TrainStream(catalogue, config)
    pairs_per_epoch = sum(len(g.pair_inputs) for g in catalogue.groups)
    batch = stream.take(pairs_per_epoch)
    visited = {catalogue.augmentation_of(int(i))[0].task.id for i in batch.puzzle_ids}
    assert len(visited) == len(catalogue.groups)
    top_left_colour = (batch.inputs.reshape(-1, 12, 12)[:, 0, 0] >= 2).mean()
    assert top_left_colour < 0.9  # most samples were translated away from the corner
