import numpy as np
import orjson
import pytest

from arc_data import ArcDataError, load_bundled, load_folder, load_kaggle, load_path
from arc_data.__main__ import main
from tests.helpers import call_main, run_cli, write_kaggle_files

GOOD_TASK = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
             "test": [{"input": [[0, 5]], "output": [[5, 0]]}]}


@pytest.mark.parametrize("dataset, split, tasks, outputs", [
    ("arc-agi-1", "train", 400, 416), ("arc-agi-1", "eval", 400, 419),
    ("arc-agi-2", "train", 1000, 1076), ("arc-agi-2", "eval", 120, 167),
    ("kaggle-2025", "eval", 120, 172),  # the competition's copy splits 6 tasks' pairs differently
])
def test_bundled_datasets_have_the_published_sizes(dataset, split, tasks, outputs):
    loaded = load_bundled(dataset, split)
    assert len(loaded) == tasks
    assert sum(len(t.test_outputs) for t in loaded) == outputs
    assert all(g.dtype == np.uint8 for t in loaded[:20] for g in t.grids())


def test_unknown_dataset_and_split_are_clear_errors():
    with pytest.raises(ArcDataError, match="unknown dataset"):
        load_bundled("arc-agi-9", "eval")
    with pytest.raises(ArcDataError, match="unknown split"):
        load_bundled("arc-agi-1", "test")


def assert_same_tasks(a, b):
    assert [t.id for t in a] == [t.id for t in b]
    for x, y in zip(a, b):
        assert len(x.grids()) == len(y.grids())
        assert all(np.array_equal(g, h) for g, h in zip(x.grids(), y.grids()))


def test_kaggle_layout_round_trip(tmp_path):
    tasks = load_bundled("arc-agi-2", "eval")[:10]
    challenges, solutions = write_kaggle_files(tmp_path, tasks)
    assert_same_tasks(load_kaggle(challenges, solutions), tasks)
    hidden = load_kaggle(challenges)
    assert not any(t.has_solutions for t in hidden)
    assert_same_tasks(load_path(challenges, solutions), tasks)


def test_folder_layout_and_single_file(tmp_path):
    tasks = load_bundled("arc-agi-1", "eval")[:5]
    for task in tasks:
        (tmp_path / f"{task.id}.json").write_bytes(orjson.dumps(task.to_json()))
    assert_same_tasks(load_folder(tmp_path), tasks)
    assert_same_tasks(load_path(tmp_path / f"{tasks[0].id}.json"), tasks[:1])


def test_missing_solution_for_a_task_names_it(tmp_path):
    tasks = load_bundled("arc-agi-2", "eval")[:3]
    challenges, solutions = write_kaggle_files(tmp_path, tasks)
    answers = orjson.loads(solutions.read_bytes())
    del answers[tasks[1].id]
    solutions.write_bytes(orjson.dumps(answers))
    with pytest.raises(ArcDataError, match=f"task {tasks[1].id}"):
        load_kaggle(challenges, solutions)


def with_grid(grid):
    return {"t1": {"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]]}]}}


BAD_INPUTS = {
    "malformed JSON": (b'{"t1": {"train": [', "not valid JSON"),
    "not an object": (b"[1, 2, 3]", "not an object"),
    "task not an object": (orjson.dumps({"t1": [1]}), "task t1: is a list"),
    "no train pairs": (orjson.dumps({"t1": {"train": [], "test": [{"input": [[1]]}]}}), "task t1: has no train pairs"),
    "no test inputs": (orjson.dumps({"t1": {"train": [{"input": [[1]], "output": [[1]]}]}}), "task t1: has no test inputs"),
    "empty grid": (orjson.dumps(with_grid([])), "train[0].input is empty"),
    "empty row": (orjson.dumps(with_grid([[]])), "row 0 is empty"),
    "ragged grid": (orjson.dumps(with_grid([[1, 2], [3]])), "ragged"),
    "side over 30": (orjson.dumps(with_grid([[1] * 31])), "more than 30"),
    "too many rows": (orjson.dumps(with_grid([[1]] * 31)), "more than 30"),
    "colour over 9": (orjson.dumps(with_grid([[1, 10]])), "outside colours 0..9"),
    "negative colour": (orjson.dumps(with_grid([[-1]])), "outside colours 0..9"),
    "float colour": (orjson.dumps(with_grid([[1.5]])), "not an integer"),
    "string colour": (orjson.dumps(with_grid([["3"]])), "not an integer"),
    "bool colour": (orjson.dumps(with_grid([[True]])), "not an integer"),
    "missing output": (orjson.dumps({"t1": {"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}}), "no 'output'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_clear_error(tmp_path, case):
    content, expected = BAD_INPUTS[case]
    path = tmp_path / "challenges.json"
    path.write_bytes(content)
    with pytest.raises(ArcDataError, match=expected.replace(".", r"\.").replace("[", r"\[")) as caught:
        load_path(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("case", ["malformed JSON", "ragged grid", "colour over 9", "no test inputs"])
def test_the_command_prints_one_line_and_exits_nonzero(tmp_path, capsys, case):
    path = tmp_path / "challenges.json"
    path.write_bytes(BAD_INPUTS[case][0])
    code, _, err = call_main(main, capsys, path)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and BAD_INPUTS[case][1].split(":")[-1].strip() in err


def test_the_command_summarises_a_good_source(tmp_path, capsys):
    path = tmp_path / "task.json"
    path.write_bytes(orjson.dumps(GOOD_TASK))
    code, out, err = call_main(main, capsys, path)
    assert code == 0, err
    assert "1 tasks, 1 demonstration pairs, 1 test inputs" in out
    code, out, _ = call_main(main, capsys, "bundled:arc-agi-2/eval")
    assert code == 0 and "120 tasks" in out and "167 test inputs" in out


@pytest.mark.cli
def test_python_m_arc_data(tmp_path):
    """The same as a command: a summary and exit 0, or one line and exit 2."""
    good, bad = tmp_path / "task.json", tmp_path / "challenges.json"
    good.write_bytes(orjson.dumps(GOOD_TASK))
    bad.write_bytes(BAD_INPUTS["ragged grid"][0])
    result = run_cli(["-m", "arc_data", good])
    assert result.returncode == 0, result.stderr
    assert "1 tasks, 1 demonstration pairs, 1 test inputs" in result.stdout
    result = run_cli(["-m", "arc_data", bad])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "ragged" in result.stderr


def test_synthetic_sources_name_count_seed_and_families():
    from arc_data.sources import load_source
    tiles = load_source("synthetic:4/2/tile")
    assert len(tiles) == 4 and all(t.id.endswith("tile") for t in tiles)
    for task in tiles:
        assert np.array_equal(task.test_outputs[0], np.tile(task.test_inputs[0], (2, 2)))
    assert [t.id for t in load_source("synthetic:3")] == [t.id for t in load_source("synthetic:3/0")]
    with pytest.raises(ArcDataError, match="families"):
        load_source("synthetic:3/0/spiral")
