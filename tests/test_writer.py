"""The submission file: pre-fill, overwrite, validation errors, atomic writes."""

import copy
import os
from pathlib import Path

import numpy as np
import orjson
import pytest

from arc_data.tasks import Task
from submission import writer
from submission.writer import (SubmissionError, prefill, read_submission, set_attempts, validate_submission,
                               write_submission)


def g(rows):
    return np.array(rows, dtype=np.uint8)


TASKS = [
    Task("aaaa0001", ((g([[1]]), g([[2]])),), (g([[1, 2], [3, 4]]), g([[5]]))),
    Task("bbbb0002", ((g([[1]]), g([[2]])),), (g([[7, 7, 7]]),)),
]


def test_prefill_is_complete_and_valid():
    submission = prefill(TASKS)
    validate_submission(submission, TASKS)
    assert list(submission) == ["aaaa0001", "bbbb0002"]
    assert submission["aaaa0001"] == [{"attempt_1": [[1, 2], [3, 4]], "attempt_2": [[0]]},
                                      {"attempt_1": [[5]], "attempt_2": [[0]]}]
    assert submission["bbbb0002"] == [{"attempt_1": [[7, 7, 7]], "attempt_2": [[0]]}]


def test_prefill_entries_do_not_share_lists():
    submission = prefill(TASKS)
    submission["aaaa0001"][0]["attempt_2"][0][0] = 3
    assert submission["aaaa0001"][1]["attempt_2"] == [[0]]


def test_set_attempts_with_two_and_one_grids():
    submission = prefill(TASKS)
    set_attempts(submission, "aaaa0001", 1, [g([[3, 3]]), g([[4]])])
    assert submission["aaaa0001"][1] == {"attempt_1": [[3, 3]], "attempt_2": [[4]]}
    set_attempts(submission, "aaaa0001", 1, [g([[6]])])  # one grid: attempt_2 keeps its value
    assert submission["aaaa0001"][1] == {"attempt_1": [[6]], "attempt_2": [[4]]}
    assert submission["aaaa0001"][0]["attempt_1"] == [[1, 2], [3, 4]]  # other slots untouched
    validate_submission(submission, TASKS)
    assert all(type(v) is int for v in submission["aaaa0001"][1]["attempt_1"][0])  # plain JSON ints


@pytest.mark.parametrize("task_id, index, grids, problem", [
    ("zzzz9999", 0, [g([[1]])], "not in the submission"),
    ("bbbb0002", 1, [g([[1]])], "no test input 1"),
    ("bbbb0002", 0, [], "got 0 grids"),
    ("bbbb0002", 0, [g([[1]])] * 3, "got 3 grids"),
    ("bbbb0002", 0, [np.zeros((31, 2), np.uint8)], "over 30"),
    ("bbbb0002", 0, [np.array([[12]])], "outside colours"),
    ("bbbb0002", 0, [np.array([[1.5]])], "dtype float64, not integer"),
    ("bbbb0002", 0, [g([[1]]), np.zeros((2, 0), np.uint8)], "attempt_2 for test input 0 has shape"),
])
def test_set_attempts_rejects_bad_input(task_id, index, grids, problem):
    submission = prefill(TASKS)
    before = copy.deepcopy(submission)
    with pytest.raises(SubmissionError, match=problem):
        set_attempts(submission, task_id, index, grids)
    assert submission == before


def broken(mutate):
    submission = prefill(TASKS)
    mutate(submission)
    return submission


def set_grid(value, key="attempt_2", task="aaaa0001", index=1):
    def mutate(submission):
        submission[task][index][key] = value
    return mutate


@pytest.mark.parametrize("submission, task, problem", [
    ([], None, "the submission is a list, not an object"),
    ("x", None, "the submission is a string"),
    (broken(lambda s: s.pop("bbbb0002")), "bbbb0002", "missing from the submission"),
    (broken(lambda s: s.update(cccc0003=[])), "cccc0003", "not a task of the challenges"),
    (broken(lambda s: s["aaaa0001"].pop()), "aaaa0001", "has 1 entries, expected 2"),
    (broken(lambda s: s["bbbb0002"].append(s["bbbb0002"][0])), "bbbb0002", "has 2 entries, expected 1"),
    (broken(lambda s: s.update(bbbb0002={"attempt_1": [[1]]})), "bbbb0002",
     "is an object, not a list of one entry"),
    (broken(lambda s: s["bbbb0002"].__setitem__(0, [[1]])), "bbbb0002", "entry 0 is a list, not an object"),
    (broken(lambda s: s["aaaa0001"][1].pop("attempt_1")), "aaaa0001", "entry 1 has no 'attempt_1'"),
    (broken(lambda s: s["aaaa0001"][0].pop("attempt_2")), "aaaa0001", "entry 0 has no 'attempt_2'"),
    (broken(set_grid([[1, 2], [3]])), "aaaa0001", "entry 1 attempt_2 is ragged: row 1"),
    (broken(set_grid([])), "aaaa0001", "entry 1 attempt_2 is empty"),
    (broken(set_grid([[]])), "aaaa0001", "entry 1 attempt_2 row 0 is empty"),
    (broken(set_grid(7)), "aaaa0001", "entry 1 attempt_2 is not a list of rows"),
    (broken(set_grid([[0]] * 31)), "aaaa0001", "31 rows, more than 30"),
    (broken(set_grid([[0] * 31])), "aaaa0001", "31 columns, more than 30"),
    (broken(set_grid([[10]])), "aaaa0001", r"entry 1 attempt_2\[0\]\[0\] is 10, outside colours 0..9"),
    (broken(set_grid([[-1]])), "aaaa0001", "is -1, outside colours"),
    (broken(set_grid([[1.0]])), "aaaa0001", "is 1.0, not an integer colour"),
    (broken(set_grid([[True]])), "aaaa0001", "is True, not an integer colour"),
    (broken(set_grid([["3"]])), "aaaa0001", "is '3', not an integer colour"),
    (broken(set_grid(None, key="attempt_1", task="bbbb0002", index=0)), "bbbb0002", "entry 0 attempt_1"),
])
def test_validation_names_task_and_problem(submission, task, problem):
    with pytest.raises(SubmissionError, match=problem) as caught:
        validate_submission(submission, TASKS)
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.task_id == task
    if task is not None:
        assert message.startswith(f"task {task}: ")


def test_extra_attempt_keys_are_tolerated():
    submission = prefill(TASKS)
    submission["bbbb0002"][0]["attempt_3"] = [[1]]
    validate_submission(submission, TASKS)


def test_write_and_read_round_trip(tmp_path):
    path = tmp_path / "submission.json"
    submission = prefill(TASKS)
    set_attempts(submission, "bbbb0002", 0, [g([[1, 2]]), g([[3]])])
    write_submission(path, submission, TASKS)
    assert read_submission(path) == submission
    assert orjson.loads(path.read_bytes()) == submission
    assert os.listdir(tmp_path) == ["submission.json"]  # no temporary file left


def test_a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "submission.json"
        write_submission(path, prefill(TASKS), TASKS)
        assert path.stat().st_mode & 0o777 == 0o644  # not the temporary file's private 0600
        path.chmod(0o640)
        write_submission(path, better_submission(), TASKS)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def old_file(tmp_path) -> tuple[Path, bytes]:
    path = tmp_path / "submission.json"
    write_submission(path, prefill(TASKS), TASKS)
    return path, path.read_bytes()


def better_submission():
    submission = prefill(TASKS)
    set_attempts(submission, "aaaa0001", 0, [g([[9] * 30] * 30)])
    return submission


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch, target):
    path, before = old_file(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk gone")

    # A crash after the bytes were written but before the rename lands.
    monkeypatch.setattr(writer.os, target, crash)
    with pytest.raises(OSError, match="disk gone"):
        write_submission(path, better_submission(), TASKS)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["submission.json"]


def test_crash_mid_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path, before = old_file(tmp_path)
    real_fdopen = os.fdopen

    class HalfWriter:
        """A file that writes half of what it is given, then fails."""

        def __init__(self, handle):
            self.file = real_fdopen(handle, "wb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise OSError("no space left")

    monkeypatch.setattr(writer.os, "fdopen", lambda handle, mode: HalfWriter(handle))
    with pytest.raises(OSError, match="no space left"):
        write_submission(path, better_submission(), TASKS)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["submission.json"]


def test_invalid_submission_is_never_written(tmp_path):
    path, before = old_file(tmp_path)
    submission = prefill(TASKS)
    del submission["bbbb0002"]
    with pytest.raises(SubmissionError, match="missing"):
        write_submission(path, submission, TASKS)
    assert path.read_bytes() == before


def test_read_submission_errors_name_the_file(tmp_path):
    path = tmp_path / "sub.json"
    path.write_text('{"aaaa0001": [')
    with pytest.raises(SubmissionError, match=r"sub\.json: is not valid JSON"):
        read_submission(path)
    with pytest.raises(SubmissionError, match="cannot be read"):
        read_submission(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------ odd output paths

def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    target, before = old_file(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_submission(link, better_submission(), TASKS)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_submission(target) == better_submission() and target.read_bytes() != before
    assert sorted(os.listdir(tmp_path)) == ["link.json", "submission.json"]


def test_a_chain_of_symlinks_and_a_dangling_one_reach_their_final_target(tmp_path):
    final = tmp_path / "real" / "final.json"
    final.parent.mkdir()
    (tmp_path / "b.json").symlink_to(final)  # dangling until the first write
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    assert writer.output_target(tmp_path / "a.json") == final
    write_submission(tmp_path / "a.json", prefill(TASKS), TASKS)
    assert (tmp_path / "a.json").is_symlink() and (tmp_path / "b.json").is_symlink()
    assert read_submission(final) == prefill(TASKS)


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory")])
def test_a_non_regular_file_is_never_replaced(tmp_path, make, kind):
    special = tmp_path / "special"
    make(special)
    mode = os.stat(special).st_mode
    link = tmp_path / "link.json"
    link.symlink_to(special)
    for path in (special, link):
        with pytest.raises(SubmissionError, match=f"is {kind}.*not a regular file") as caught:
            write_submission(path, prefill(TASKS), TASKS)
        assert "\n" not in str(caught.value)
    assert os.stat(special).st_mode == mode and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["link.json", "special"]  # no temporary file either


def test_device_nodes_are_refused_by_looking_only():
    # output_target only calls os.stat: nothing here can write to or replace the device.
    for device in ("/dev/null", "/dev/full"):
        if os.path.exists(device):
            with pytest.raises(SubmissionError, match="a character device"):
                writer.output_target(device)


def test_prepare_output_creates_the_missing_folder(tmp_path):
    out = tmp_path / "new" / "deeper" / "submission.json"
    assert writer.prepare_output(out) == out
    assert out.parent.is_dir() and not out.exists()
