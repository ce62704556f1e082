"""What a network was pretrained on travels with its export (pretrained_on.json), and scoring it on
those tasks is refused in one line unless asked for."""

import dataclasses
import os
from pathlib import Path

import orjson
import pytest
import torch

import bench.submission
import make_submission
from arc_data.overlap import pair_key
from arc_data.sources import load_source
from arc_data.tasks import Task
from augment.augmentation import Augmentation
from pretrain.config import tiny as tiny_model
from pretrain.distributed import setup_world
from pretrain.export import (PRETRAINED_ON, ExportError, export_network, export_run, pretraining_record,
                             read_pretraining_record)
from pretrain.model import build_model
from pretrain.presets import tiny
from pretrain.trainer import Trainer
from tests.helpers import call_main

TRAIN, HELD_OUT = "synthetic:6/0/colour_map+flip_lr", "synthetic:2/1/colour_map"
OLD = b'{"old": "file"}'


def pairs_of(task: Task, with_test: bool) -> list:
    return list(task.train) + (list(zip(task.test_inputs, task.test_outputs)) if with_test else [])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny run of 2 steps on TRAIN (HELD_OUT held out), exported by export_run."""
    folder = tmp_path_factory.mktemp("pretrained")
    config = dataclasses.replace(tiny(), steps=2, log_every=1, eval_every=0, checkpoint_every=2)
    config.data = dataclasses.replace(config.data, train_sources=(TRAIN,), held_out_sources=(HELD_OUT,))
    Trainer(config, folder / "run", setup_world("cpu")).train()
    export_run(folder / "run", folder / "export")
    return folder / "export"


def test_the_export_records_every_task_and_every_pair_it_trained_on(exported):
    record = read_pretraining_record(exported)
    train, held_out = load_source(TRAIN), load_source(HELD_OUT)
    assert record.task_ids == {t.id for t in train + held_out}
    for task in train:  # a training task trains on all its pairs, test pairs included
        assert all(pair_key(*pair) in record.pairs for pair in pairs_of(task, with_test=True))
    for task in held_out:  # a held-out task only on its demonstrations
        assert all(pair_key(*pair) in record.pairs for pair in task.train)
    raw = orjson.loads((exported / PRETRAINED_ON).read_bytes())
    assert raw["train_sources"] == [TRAIN] and raw["held_out_sources"] == [HELD_OUT] and raw["steps"] == 2


def test_the_exported_files_are_readable_by_others_as_the_umask_allows(exported):
    umask = os.umask(0)
    os.umask(umask)
    for path in exported.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def test_a_renamed_rotated_recoloured_copy_is_found_and_a_new_task_is_not(exported):
    record = read_pretraining_record(exported)
    original = load_source(TRAIN)[0]
    augmentation = Augmentation(5, (0, 3, 1, 2, 9, 8, 7, 6, 5, 4))
    copy = Task("renamed", tuple((augmentation.apply(a), augmentation.apply(b)) for a, b in original.train[:1]),
                original.test_inputs)
    assert record.overlap(original) == f"task {original.id} was pretrained on"
    assert record.overlap(copy) == f"task renamed shares an example pair with pretraining task {original.id}"
    assert all(record.overlap(t) is None for t in load_source("synthetic:4/9/tile"))


def test_a_network_without_a_record_and_a_malformed_record(tmp_path):
    export_network(build_model(tiny_model()), torch.zeros(64), tmp_path)
    assert read_pretraining_record(tmp_path) is None
    (tmp_path / PRETRAINED_ON).write_bytes(b'{"task_ids": ["a"]}')
    with pytest.raises(ExportError, match=PRETRAINED_ON):
        read_pretraining_record(tmp_path)


def kaggle_file(path: Path, tasks: list[Task], with_solutions: bool) -> tuple[Path, Path | None]:
    path.write_bytes(orjson.dumps({t.id: {"train": t.to_json()["train"],
                                          "test": [{"input": g.tolist()} for g in t.test_inputs]} for t in tasks}))
    if not with_solutions:
        return path, None
    solutions = path.with_name("solutions.json")
    solutions.write_bytes(orjson.dumps({t.id: [g.tolist() for g in t.test_outputs] for t in tasks}))
    return path, solutions


def test_make_submission_refuses_to_score_on_pretraining_tasks(exported, tmp_path, capsys):
    tasks = load_source(TRAIN)[:2] + load_source("synthetic:1/9/tile")
    challenges, solutions = kaggle_file(tmp_path / "challenges.json", tasks, with_solutions=True)
    out = tmp_path / "submission.json"
    out.write_bytes(OLD)
    code = make_submission.main(["--quiet", "--challenges", str(challenges), "--solutions", str(solutions),
                                 "--checkpoint", str(exported), "--out", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: {exported}: was pretrained on 2 of the 3 tasks to score (task {tasks[0].id} "
                          "was pretrained on)") and "--allow-pretrained-tasks" in err
    assert out.read_bytes() == OLD  # refused before the pre-fill


@pytest.mark.parametrize("allow, with_solutions", [(True, True), (False, False)])
def test_the_flag_or_hidden_solutions_let_it_run(exported, tmp_path, capsys, allow, with_solutions):
    tasks = load_source(TRAIN)[:1]
    challenges, solutions = kaggle_file(tmp_path / "challenges.json", tasks, with_solutions)
    args = ["--quiet", "--challenges", str(challenges), "--checkpoint", str(exported), "--out", str(tmp_path / "s.json"),
            "--steps", "1", "--workers", "1", "--time-limit", "60"]
    args += ["--solutions", str(solutions)] if solutions else []
    args += ["--allow-pretrained-tasks"] if allow else []
    assert make_submission.main(args) == 0, capsys.readouterr().err


def test_the_benchmark_suite_refuses_too(exported, capsys):
    code, _, err = call_main(bench.submission.main, capsys, "--suite", "small-arc", "--source", TRAIN,
                             "--checkpoint", exported, "--seconds-per-task", "5")
    assert code == 2 and err.count("\n") == 1, err
    assert "was pretrained on 6 of the 6 tasks to score" in err


def test_the_record_of_the_small_arc_sources_holds_no_evaluated_task():
    """The small-arc run's record, built from its sources, shares nothing with the tasks it is scored on."""
    from pretrain.presets import small_arc
    data = small_arc().data
    record_dict = pretraining_record(data.train_sources, data.held_out_sources, steps=0)
    assert len(record_dict["task_ids"]) > 100
    folder_record = _record_from(record_dict)
    for source in data.evaluated_sources:
        assert all(folder_record.overlap(t) is None for t in load_source(source)), source


def _record_from(record: dict):
    from pretrain.export import PretrainingRecord
    return PretrainingRecord(Path("."), frozenset(record["task_ids"]),
                             {bytes.fromhex(k): v for k, v in record["pairs"].items()})
