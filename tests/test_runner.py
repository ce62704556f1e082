"""Worker processes that fail: a task that raises, a broken CUDA context, a worker that dies, one
that ignores SIGTERM. The run must end when the work does, count the lost tasks as failed and keep
their fallback attempts, and give the rest of the work to the workers left or their replacements.

The faults are injected by replacing ``runner.solve_shard`` with a function of this module: the run
hands that function to its spawned workers, which import it from here.
"""

import dataclasses
import functools
import multiprocessing as mp
import os
import signal
import time

import orjson
import pytest

from arc_data.synthetic import synthetic_tasks
from submission import runner
from submission.config import cpu, fresh_model_config
from submission.finetune import Network, cuda_context_broken, solve_shard
from submission.writer import FALLBACK_ATTEMPT_2, validate_submission

TIME_LIMIT = 300.0


def tiny_config():
    """Eager: the runs' 300 s limit would otherwise compile the network in every worker (the faults,
    not compiling, are under test here)."""
    return dataclasses.replace(cpu(), num_aug=4, views=4, steps=2, embedding_steps=1, batch=4, inference_batch=8,
                               compile=False)


# -- faults, run inside the workers -------------------------------------------------------------

def dies_on(doomed: str, tasks, *args, **options):
    if any(t.id == doomed for t in tasks):
        os._exit(7)
    return solve_shard(tasks, *args, **options)


def raises_on(doomed: str, error: Exception, tasks, *args, **options):
    if any(t.id == doomed for t in tasks):
        raise error
    return solve_shard(tasks, *args, **options)


def killed_after_each_first_report(tasks, *args, report, **options):
    """SIGKILLs its own worker right after reporting the first task of the shard it was given."""
    def report_then_die(outcome):
        report(outcome)
        os.kill(os.getpid(), signal.SIGKILL)
    return solve_shard(tasks, *args, report=report_then_die, **options)


def reports_one_then_hangs(tasks, *args, report, **options):
    """Reports the shard's first task, then never finishes (the deadline stops it)."""
    solve_shard(tasks[:1], *args, report=report, **options)
    time.sleep(3600)


def hangs_ignoring_sigterm(marker, tasks, *args, **options):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    marker.touch()
    time.sleep(3600)


def always_dies(tasks, *args, **options):
    os._exit(9)


def ignore_sigterm_then_sleep(ready):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(3600)


# -- helpers ------------------------------------------------------------------------------------

def run(tmp_path, monkeypatch, solve, tasks, workers=1, time_limit=TIME_LIMIT, config=None):
    monkeypatch.setattr(runner, "solve_shard", solve)
    out = tmp_path / "submission.json"
    summary = runner.run_submission(tasks, Network.fresh_init(fresh_model_config()), config or tiny_config(), out,
                                    time_limit, workers=workers, quiet=True)
    written = orjson.loads(out.read_bytes())
    validate_submission(written, tasks)
    assert not mp.active_children(), "a worker outlived the run"
    return summary, written


def first_solved(tasks):
    return min(tasks, key=runner.task_size).id


def assert_fallback_kept(written, task):
    assert written[task.id][0] == {"attempt_1": task.test_inputs[0].tolist(),
                                   "attempt_2": [list(r) for r in FALLBACK_ATTEMPT_2]}


# -- tests --------------------------------------------------------------------------------------

def test_a_worker_that_dies_costs_only_its_task_and_is_replaced(tmp_path, monkeypatch):
    """One worker: it dies on the first task, a replacement tries that task again and dies too, and
    a second replacement solves every other task. The run ends long before its deadline."""
    tasks = synthetic_tasks(4, seed=5)
    doomed = first_solved(tasks)
    summary, written = run(tmp_path, monkeypatch, functools.partial(dies_on, doomed), tasks)
    assert summary.seconds < TIME_LIMIT / 3
    assert [o.task_id for o in summary.failed] == [doomed]
    assert summary.outcomes[doomed].note == "its worker died twice (exit code 7)"
    assert sorted(o.task_id for o in summary.predicted) == sorted(t.id for t in tasks if t.id != doomed)
    assert summary.replaced_workers == 2 and summary.unfinished == []
    assert_fallback_kept(written, next(t for t in tasks if t.id == doomed))


@pytest.mark.parametrize("error, replaced", [
    (ValueError("a bad grid"), 0),
    (RuntimeError("CUDA error: an illegal memory access was encountered\nCompile with TORCH_USE_CUDA_DSA"), 1),
])
def test_a_task_that_raises_is_failed_not_predicted(tmp_path, monkeypatch, error, replaced):
    """An error fails its task with a one-line note; a CUDA error also retires the worker (its
    context is unusable), and a new one finishes the work."""
    tasks = synthetic_tasks(3, seed=6)
    doomed = first_solved(tasks)
    summary, written = run(tmp_path, monkeypatch, functools.partial(raises_on, doomed, error), tasks)
    assert summary.seconds < TIME_LIMIT / 3
    failed = summary.outcomes[doomed]
    assert failed.failed and failed.note == f"{type(error).__name__}: {str(error).splitlines()[0]}"
    assert len(summary.predicted) == 2 and summary.failed == [failed]
    assert summary.replaced_workers == replaced
    assert_fallback_kept(written, next(t for t in tasks if t.id == doomed))


def test_when_every_worker_keeps_dying_the_run_ends_at_once(tmp_path, monkeypatch):
    tasks = synthetic_tasks(4, seed=7)
    summary, written = run(tmp_path, monkeypatch, always_dies, tasks)
    assert summary.seconds < TIME_LIMIT / 3
    assert len(summary.failed) == len(tasks) and not summary.predicted
    assert summary.replaced_workers == runner.DEATHS_WITHOUT_PROGRESS - 1
    for task in tasks:
        assert_fallback_kept(written, task)


@pytest.mark.slow
def test_a_worker_that_ignores_sigterm_is_killed_by_the_deadline(tmp_path, monkeypatch):
    tasks = synthetic_tasks(2, seed=8)
    marker = tmp_path / "ignoring-sigterm"
    summary, _ = run(tmp_path, monkeypatch, functools.partial(hangs_ignoring_sigterm, marker), tasks, time_limit=20)
    assert marker.exists(), "the worker never reached its task (too slow a start for this test)"
    assert summary.seconds < 20
    assert sorted(summary.unfinished) == sorted(t.id for t in tasks) and not summary.outcomes


def test_stop_processes_escalates_from_terminate_to_kill():
    context = mp.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=ignore_sigterm_then_sleep, args=(ready,), daemon=True)
    process.start()
    assert ready.wait(timeout=60)
    started = time.monotonic()
    runner.stop_processes([process], grace=0.2)
    assert process.exitcode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_cuda_context_broken_tells_cuda_errors_from_out_of_memory():
    import torch
    assert cuda_context_broken(RuntimeError("CUDA error: device-side assert triggered"))
    assert not cuda_context_broken(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not cuda_context_broken(ValueError("CUDA error in a message of another kind"))
    assert not cuda_context_broken(RuntimeError("shape mismatch"))


def joint(config, tasks):
    return dataclasses.replace(config, shard_tasks=tasks)


def predicted_in_file(written, summary, task):
    """Whether the file's first attempt for the task is its outcome's best candidate."""
    return written[task.id][0]["attempt_1"] == summary.outcomes[task.id].ranked[0][0]


def test_a_worker_killed_in_a_joint_shards_prediction_keeps_what_it_reported(tmp_path, monkeypatch):
    """One joint shard of three tasks; the worker is SIGKILLed right after it reports its first
    prediction, and so is the worker that takes over the two left. The two tasks reported before the
    kills are predicted in the file; the third keeps its fallback attempts and is failed."""
    tasks = synthetic_tasks(3, seed=9)
    summary, written = run(tmp_path, monkeypatch, killed_after_each_first_report, tasks,
                           config=joint(tiny_config(), 3))
    assert len(summary.predicted) == 2 and len(summary.failed) == 1
    assert summary.failed[0].note == f"its worker died twice (exit code {-signal.SIGKILL})"
    for task in tasks:
        if summary.outcomes[task.id].failed:
            assert_fallback_kept(written, task)
        else:
            assert predicted_in_file(written, summary, task), task.id


def test_a_reported_task_reaches_the_file_while_its_shard_runs_on(tmp_path, monkeypatch):
    """A joint shard whose worker reports one task and then hangs until the deadline: that task is in
    the file (it was sent when made, not with the shard's end), the others keep their fallbacks."""
    tasks = synthetic_tasks(3, seed=10)
    summary, written = run(tmp_path, monkeypatch, reports_one_then_hangs, tasks, time_limit=25,
                           config=joint(tiny_config(), 3))
    assert len(summary.predicted) == 1 and len(summary.unfinished) == 2
    reported = next(t for t in tasks if t.id in summary.outcomes)
    assert predicted_in_file(written, summary, reported)
    for task in tasks:
        if task is not reported:
            assert_fallback_kept(written, task)


def test_the_file_is_rewritten_at_most_every_few_seconds_and_at_flush(tmp_path, monkeypatch):
    tasks = synthetic_tasks(3, seed=11)
    writes = []
    monkeypatch.setattr(runner, "write_submission", lambda out, submission, hidden: writes.append(time.monotonic()))
    file = runner._SubmissionFile(tmp_path / "submission.json", tasks)
    assert len(writes) == 1  # the pre-filled file, before any model work
    outcome = runner.TaskOutcome(tasks[0].id, [[tasks[0].test_inputs[0].tolist()]])
    file.add(outcome)
    file.add(outcome)
    assert len(writes) == 1 and 0 < file.seconds_to_next_write() <= runner.WRITE_EVERY
    file.flush()
    assert len(writes) == 2 and file.seconds_to_next_write() == float("inf")
    file.flush()
    assert len(writes) == 2  # nothing new to write
