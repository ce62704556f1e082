"""Task selection by size, source filters, and the guard that keeps evaluated tasks out of pretraining."""

import dataclasses

import numpy as np
import orjson
import pytest

from arc_data import ArcDataError, load_bundled
from arc_data.overlap import overlaps, pair_key
from arc_data.sources import id_part, load_source
from arc_data.synthetic import synthetic_tasks
from arc_data.tasks import Task, fits, select
from augment.augmentation import Augmentation
from pretrain.data import DataConfig, PuzzleCatalogue
from tests.helpers import call_main, run_cli


@pytest.mark.parametrize("split, side, tasks, outputs", [
    ("train", 8, 70, 81), ("eval", 8, 21, 27), ("train", 10, 178, 190), ("eval", 10, 77, 88)])
def test_arc_agi_1_tasks_within_a_side(split, side, tasks, outputs):
    chosen = select(load_bundled("arc-agi-1", split), max_side=side)
    assert (len(chosen), sum(len(t.test_inputs) for t in chosen)) == (tasks, outputs)
    assert [t.id for t in load_source(f"bundled:arc-agi-1/{split},max-side={side}")] == [t.id for t in chosen]


def test_a_band_of_sizes_is_the_larger_side_minus_the_smaller():
    band = load_source("bundled:arc-agi-1/train,max-side=12,min-side=11")
    assert len(band) == len(select(load_bundled("arc-agi-1", "train"), max_side=12)) - 178
    assert band and all(t.max_side in (11, 12) for t in band)


def test_bundled_arc_agi_2_evaluation_has_almost_no_small_tasks():
    tasks = load_bundled("arc-agi-2", "eval")
    assert len(select(tasks, max_side=8)) == 0 and len(select(tasks, max_side=10)) == 2


def test_fits_counts_the_test_outputs_when_known():
    small = np.zeros((3, 3), np.uint8)
    task = Task("t", ((small, small),), (small,), (np.zeros((3, 9), np.uint8),))
    assert not fits(task, 8) and fits(task, 9)
    assert fits(task.without_solutions(), 3)
    assert select([task, task.without_solutions()], max_side=8, limit=None) == [task.without_solutions()]
    assert len(select([task] * 5, limit=2)) == 2


def random_pair(rng):
    grid_in = rng.integers(0, 10, size=rng.integers(3, 9, size=2)).astype(np.uint8)
    return grid_in, np.ascontiguousarray(np.tile(grid_in, (1, 2))[::-1])


def test_pair_key_is_the_same_for_every_dihedral_and_colour_version(rng):
    for _ in range(50):
        grid_in, grid_out = random_pair(rng)
        aug = Augmentation(int(rng.integers(8)), (0, *(rng.permutation(9) + 1).tolist()))
        assert pair_key(aug.apply(grid_in), aug.apply(grid_out)) == pair_key(grid_in, grid_out)


def test_pair_key_tells_different_pairs_apart(rng):
    keys = {pair_key(*random_pair(rng)) for _ in range(200)}
    grid_in, grid_out = random_pair(rng)
    other = grid_out.copy()
    other[0, 0] = (other[0, 0] + 1) % 10
    assert len(keys) == 200 and pair_key(grid_in, grid_out) != pair_key(grid_in, other)
    assert pair_key(grid_in, grid_out) != pair_key(grid_out, grid_in)


def test_arc_agi_2_training_holds_the_arc_agi_1_evaluation_tasks():
    """376 of ARC-AGI-1's evaluation tasks are in ARC-AGI-2's training split under the same id (pairs
    reordered, some corrected), and one more as a colour-permuted copy under another id."""
    found = overlaps(load_bundled("arc-agi-2", "train"), load_bundled("arc-agi-1", "eval"))
    assert sum(o.by == "id" for o in found) == 376
    assert [(o.task_id, o.other_id) for o in found if o.by == "content"] == [("caa06a1f", "50a16a69")]
    remaining = load_source("bundled:arc-agi-2/train,minus=bundled:arc-agi-1/eval")
    assert len(remaining) == 1000 - 377
    assert not overlaps(remaining, load_bundled("arc-agi-1", "eval"))
    assert len(load_source("bundled:arc-agi-2/train,minus=bundled:arc-agi-1/eval,max-side=10")) == 224


def test_arc_agi_1_training_shares_two_tasks_with_its_evaluation_by_content():
    found = overlaps(load_bundled("arc-agi-1", "train"), load_bundled("arc-agi-1", "eval"))
    assert [(o.task_id, o.other_id, o.by) for o in found] == [("40853293", "070dd51e", "content"),
                                                               ("caa06a1f", "50a16a69", "content")]


def disguised_copy(task: Task, new_id: str) -> dict:
    """The task under another id, as JSON with its keys in another order, pairs reversed, and every grid
    transposed with colours 1..9 permuted."""
    aug = Augmentation(4, (0, 9, 8, 7, 6, 5, 4, 3, 2, 1))
    grids = lambda g: aug.apply(g).tolist()  # noqa: E731
    return {"test": [{"output": grids(o), "input": grids(i)} for i, o in zip(task.test_inputs, task.test_outputs)],
            "train": [{"output": grids(o), "input": grids(i)} for i, o in reversed(task.train)], "id": new_id}


def catalogue_error(train_sources, held_out_sources=(), evaluated=("bundled:arc-agi-1/eval",)) -> str:
    config = DataConfig(train_sources=tuple(train_sources), held_out_sources=tuple(held_out_sources),
                        evaluated_sources=tuple(evaluated), num_aug=2)
    with pytest.raises(ArcDataError) as error:
        PuzzleCatalogue.from_config(config)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_pretraining_refuses_an_evaluated_task_by_id():
    message = catalogue_error(["synthetic:4/0", "bundled:arc-agi-2/train,max-side=8"])
    assert "pretraining source 'bundled:arc-agi-2/train,max-side=8'" in message
    assert "is also an evaluated task" in message
    assert "'bundled:arc-agi-2/train,max-side=8,minus=bundled:arc-agi-1/eval'" in message
    held_out = catalogue_error(["synthetic:4/0"], ["bundled:arc-agi-1/eval,max-side=6"])
    assert "pretraining source 'bundled:arc-agi-1/eval,max-side=6'" in held_out


def test_pretraining_refuses_an_evaluated_task_by_content(tmp_path):
    evaluated = load_bundled("arc-agi-1", "eval")[3]
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "renamed.json").write_bytes(orjson.dumps(disguised_copy(evaluated, "renamed")))
    for task in synthetic_tasks(3, seed=4):
        (folder / f"{task.id}.json").write_bytes(orjson.dumps(task.to_json()))
    message = catalogue_error([str(folder)])
    assert f"task renamed shares an example pair (up to rotation and colours) with evaluated task {evaluated.id}" in message
    # One pair changed, the others still shared: still refused.
    copy = disguised_copy(evaluated, "renamed")
    copy["train"][0]["output"] = [[1]]
    (folder / "renamed.json").write_bytes(orjson.dumps(copy))
    assert "task renamed shares" in catalogue_error([str(folder)])
    # Subtracting the evaluated tasks leaves the rest.
    left = load_source(f"{folder},minus=bundled:arc-agi-1/eval")
    assert sorted(t.id for t in left) == sorted(t.id for t in synthetic_tasks(3, seed=4))


def test_sources_that_do_not_overlap_pass_the_guard():
    config = DataConfig(train_sources=("synthetic:6/0",), held_out_sources=("synthetic:2/1",),
                        evaluated_sources=("bundled:arc-agi-1/eval",), num_aug=2)
    assert len(PuzzleCatalogue.from_config(config).groups) == 8


def test_parts_split_a_source_in_two_by_id():
    tasks = load_bundled("arc-agi-1", "train")
    part = load_source("bundled:arc-agi-1/train,part=3/8")
    rest = load_source("bundled:arc-agi-1/train,not-part=3/8")
    assert len(part) + len(rest) == len(tasks) and not {t.id for t in part} & {t.id for t in rest}
    assert 25 < len(part) < 75 and all(id_part(t.id, 8) == 3 for t in part)


@pytest.mark.parametrize("source, problem", [
    ("bundled:arc-agi-1/train,max_side=8", "unknown filter 'max_side'"),
    ("bundled:arc-agi-1/train,max-side=40", "max-side needs a whole number from 1 to 30"),
    ("bundled:arc-agi-1/train,min-side=0", "min-side needs a whole number from 1 to 30"),
    ("bundled:arc-agi-1/train,part=2/2", "part needs K/N with 0 <= K < N"),
    ("bundled:arc-agi-1/train,minus=bundled:arc-agi-9/eval", "unknown dataset"),
    ("bundled:arc-agi-2/eval,max-side=6", "no task is left after the filter max-side=6"),
])
def test_bad_filters_are_one_line_errors(source, problem):
    with pytest.raises(ArcDataError, match=problem):
        load_source(source)


def test_small_arc_preset_pretrains_on_training_tasks_only():
    from pretrain.presets import small_arc
    data = small_arc().data
    catalogue = PuzzleCatalogue.from_config(data)  # passes the guard
    train = [g.task for g in catalogue.groups if not g.held_out]
    held_out = [g.task for g in catalogue.held_out_groups()]
    evaluated = [t for s in data.evaluated_sources for t in load_source(s)]
    assert not overlaps(train + held_out, evaluated)
    assert not {t.id for t in train} & {t.id for t in held_out}
    assert all(fits(t, 10) for t in train + held_out) and catalogue.canvases() == [8, 12]
    assert len(held_out) == 20 and len(train) == 198


@pytest.mark.parametrize("how", ["main", pytest.param("command", marks=pytest.mark.cli)])
def test_the_cli_refuses_a_leaking_source_in_one_line(tmp_path, capsys, how):
    args = ["--preset", "tiny", "--device", "cpu", "--steps", "1", "--train-sources", "bundled:arc-agi-2/train,max-side=6",
            "--held-out-sources", "--evaluated-sources", "bundled:arc-agi-1/eval", "--out", tmp_path / "run"]
    if how == "main":
        from pretrain.__main__ import main
        code, _, err = call_main(main, capsys, *args)
    else:
        result = run_cli(["-m", "pretrain", *args], timeout=120)
        code, err = result.returncode, result.stderr
    assert code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "overlaps the evaluated tasks" in err


def test_one_gpu_preset_pretrains_on_training_tasks_only():
    from pretrain.presets import one_gpu
    data = dataclasses.replace(one_gpu().data, num_aug=1)  # the guard does not depend on the augmentations
    catalogue = PuzzleCatalogue.from_config(data)
    train = [g.task for g in catalogue.groups if not g.held_out]
    held_out = [g.task for g in catalogue.held_out_groups()]
    evaluated = [t for s in data.evaluated_sources for t in load_source(s)]
    assert not overlaps(train + held_out, evaluated)
    assert not {t.id for t in train} & {t.id for t in held_out}
    assert catalogue.canvases() == [8, 12, 16, 20, 24, 30] and len(train) > 500
