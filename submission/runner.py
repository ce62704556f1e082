"""Run the submission: pre-fill, fine-tune and predict every task on worker processes, under one deadline.

The submission file is written, valid, before any model work. Each task's outcome reaches this
process the moment its worker has made it (in joint shards too) and goes into the file, which is
rewritten atomically at most every ``WRITE_EVERY`` seconds and at the end: a kill at any moment
leaves a valid file holding every task that was reported.

One worker process per device (one per GPU; on a CPU, ``--workers`` processes sharing the cores;
``submission/worker.py``) takes shards of tasks one at a time. Each task gets a time share that
adapts to what is left: ``(time left) x workers / (tasks left)``, capped by the preset and by the
time left; a task stops fine-tuning early to keep time for inference, and inference stops adding
views when the share runs out. Smaller tasks go first, so when time runs short it is the largest
(slowest, least likely solved) tasks that keep their fallback attempts. When the deadline arrives,
unfinished workers are stopped and the file keeps whatever was reported.

Workers fail in four ways, and none of them holds the run up:

- a task cannot take part (a grid larger than the network's canvas, data that fail to encode) or its
  prediction raises: that task alone fails, with its reason, and its shard goes on;
- the shard raises: the worker reports its unreported tasks failed (one line) and takes the next shard;
- a task breaks the worker's CUDA context (a CUDA error other than out-of-memory; nothing on that
  context works afterwards): the worker reports the rest of its shard failed and exits;
- the worker dies (a fatal CUDA error, a kill, ``os._exit``): the run notices at once and gives the
  tasks of its shard not yet reported to a worker once more (a second death marks them failed).

A worker that exits or dies is replaced on its device while time allows, unless that device's
workers keep dying without finishing anything. Failed tasks keep their fallback attempts and are
listed apart (``RunSummary.failed``). Workers send their log lines (device, memory, one line per
task) to this process, which prints them above the progress bar.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from arc_data.progress import progress, write_line
from arc_data.tasks import Task
from submission.config import FinetuneConfig, compile_for_run
from submission.finetune import Network, TaskOutcome, solve_shard
from submission.worker import Solver, worker_main
from submission.writer import prefill, set_attempts, write_submission

# Seconds kept back from the deadline for stopping workers and the last write.
STOP_MARGIN = 5.0
# A dead worker is replaced only with at least this many seconds left (a new worker imports torch,
# receives the network and, on a GPU, creates its CUDA context before it can start a task).
NEW_WORKER_SECONDS = 30.0
# A device whose workers die (or exit broken) this many times in a row without finishing a task gets
# no new worker: its GPU is likely unusable.
DEATHS_WITHOUT_PROGRESS = 3
# Times a shard is started: once, and once more (its tasks not yet reported) if its worker died.
SHARD_STARTS = 2
# A shard aims to end this share of its time early (at most MAX_SHARD_MARGIN seconds): the last task
# of a shard that reaches the deadline is lost, and time estimates run short on a loaded machine.
SHARD_MARGIN = 0.05
MAX_SHARD_MARGIN = 60.0
# The submission file is rewritten at most this often (seconds) while outcomes arrive, and at the end.
WRITE_EVERY = 2.0


@dataclass
class RunSummary:
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)  # every task that finished or failed
    seconds: float = 0.0
    unfinished: list[str] = field(default_factory=list)  # tasks left with their fallback attempts
    replaced_workers: int = 0  # workers started in place of ones that died or exited broken

    @property
    def failed(self) -> list[TaskOutcome]:
        """Tasks that raised, ran out of memory for good or lost their worker (fallback attempts kept)."""
        return [o for o in self.outcomes.values() if o.failed]

    @property
    def predicted(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes.values() if not o.failed]


def task_size(task: Task) -> int:
    """A cost proxy for ordering: cells of the largest grid, times the pairs to fit."""
    grids = [g for pair in task.train for g in pair] + list(task.test_inputs)
    return max(g.size for g in grids) * (len(task.train) + len(task.test_inputs))


def worker_devices(workers: int | None) -> list[str]:
    """One worker per GPU when there are GPUs; else ``workers`` CPU workers (default: one per core).

    A CPU worker computes with one thread, so a task's result does not depend on how many workers
    share the machine (float sums split over threads round differently).
    """
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(min(count, workers or count))]
    return ["cpu"] * (workers or os.cpu_count() or 1)


# -- the run ---------------------------------------------------------------------------------------

@dataclass
class _Shard:
    tasks: list[Task]
    starts: int = 0  # times a worker began it
    reported: set[str] = field(default_factory=set)  # ids of its tasks whose outcome has arrived

    def left(self) -> list[Task]:
        return [t for t in self.tasks if t.id not in self.reported]


@dataclass
class _Worker:
    slot: int  # which device of the run
    process: mp.process.BaseProcess
    conn: Connection
    shard: _Shard | None = None  # in flight


class _Pool:
    """The worker processes, one per device slot, with what each one holds."""

    def __init__(self, devices: list[str], network: Network, config: FinetuneConfig, solve: Solver):
        self.devices, self.network, self.config, self.solve = devices, network, config, solve
        self.context = mp.get_context("spawn")
        self.workers: list[_Worker] = []
        self.deaths_in_a_row = [0] * len(devices)  # per slot, since its last finished task
        for slot in range(len(devices)):
            self.start(slot)

    def start(self, slot: int) -> None:
        ours, theirs = self.context.Pipe()
        name = f"worker {slot}"
        process = self.context.Process(target=worker_main, daemon=True, name=name,
                                       args=(name, self.devices[slot], self.network, self.config, theirs, self.solve))
        process.start()
        theirs.close()  # the worker holds the only other end, so its death reads as end-of-file here
        self.workers.append(_Worker(slot, process, ours))

    def can_restart(self, slot: int) -> bool:
        return self.deaths_in_a_row[slot] < DEATHS_WITHOUT_PROGRESS

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.shard is None]

    def busy(self) -> bool:
        return any(w.shard is not None for w in self.workers)

    def send(self, worker: _Worker, shard: _Shard, seconds: float, run_seconds: float) -> bool:
        """Hand a shard to an idle worker with its share and the run's time left; False if the worker
        is already gone."""
        try:
            worker.conn.send((shard.tasks, seconds, time.time(), run_seconds))
        except OSError:  # a broken pipe: it died; wait() reports the death
            return False
        worker.shard, shard.starts = shard, shard.starts + 1
        return True

    def wait(self, timeout: float) -> list[tuple[_Worker, str, object]]:
        """Events within ``timeout`` seconds: (worker, "log", line), (worker, "task", outcome),
        (worker, "done", None) and, after everything it sent, (worker, "died", exit code)."""
        ready = set(wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers], timeout))
        events = []
        for worker in [w for w in self.workers if {w.conn, w.process.sentinel} & ready]:
            messages, ended = self._receive(worker)
            events += [(worker, kind, payload) for kind, payload in messages]
            if ended or worker.process.sentinel in ready:
                events.append((worker, "died", self._bury(worker)))
        return events

    @staticmethod
    def _receive(worker: _Worker) -> tuple[list[tuple[str, object]], bool]:
        """The messages the worker has sent so far, and whether its end of the pipe is closed."""
        messages = []
        while worker.conn.poll():
            try:
                messages.append(worker.conn.recv())
            except (EOFError, OSError):  # end of what a dead worker sent (the last message may be cut short)
                return messages, True
        return messages, False

    def _bury(self, worker: _Worker) -> int | None:
        stop_processes([worker.process], grace=1.0)
        worker.conn.close()
        self.workers.remove(worker)
        return worker.process.exitcode

    def stop(self) -> None:
        """Idle workers are told to stop; busy ones are terminated (a result now comes too late)."""
        for worker in self.workers:
            if worker.shard is None:
                try:
                    worker.conn.send(None)
                except OSError:  # already gone
                    pass
            else:
                worker.process.terminate()
        stop_processes([w.process for w in self.workers], grace=STOP_MARGIN / 2)
        for worker in self.workers:
            worker.conn.close()


def stop_processes(processes: list, grace: float) -> None:
    """Wait up to ``grace`` seconds for the processes to exit; terminate (SIGTERM) the rest, then
    kill (SIGKILL) those still alive a second later."""
    _join_all(processes, grace)
    for escalate in ("terminate", "kill"):
        alive = [p for p in processes if p.is_alive()]
        for process in alive:
            getattr(process, escalate)()
        _join_all(alive, 1.0)


def _join_all(processes: list, seconds: float) -> None:
    end = time.monotonic() + seconds
    for process in processes:
        process.join(timeout=max(0.0, end - time.monotonic()))


class _SubmissionFile:
    """The submission as it grows: each outcome goes in at once, the file is rewritten (atomically)
    at most every ``WRITE_EVERY`` seconds, and whenever ``flush`` is called."""

    def __init__(self, out: Path, unsolved: list[Task]):
        self.out, self.unsolved = out, unsolved
        self.submission = prefill(unsolved)
        self.written_at, self.dirty = -math.inf, True
        self.flush()

    def add(self, outcome: TaskOutcome) -> None:
        _record(self.submission, outcome)
        self.dirty = True
        if time.monotonic() - self.written_at >= WRITE_EVERY:
            self.flush()

    def seconds_to_next_write(self) -> float:
        return max(0.0, self.written_at + WRITE_EVERY - time.monotonic()) if self.dirty else math.inf

    def flush(self) -> None:
        if self.dirty:
            write_submission(self.out, self.submission, self.unsolved)
            self.written_at, self.dirty = time.monotonic(), False


def run_submission(tasks: list[Task], network: Network, config: FinetuneConfig, out: Path, time_limit: float,
                   workers: int | None = None, quiet: bool = False,
                   on_outcome: Callable[[TaskOutcome], None] | None = None) -> RunSummary:
    """Fill ``out`` with the best attempts found for ``tasks`` within ``time_limit`` seconds;
    ``on_outcome`` sees each task's outcome as it arrives."""
    start = time.monotonic()
    deadline = start + time_limit - STOP_MARGIN
    unsolved = [t.without_solutions() for t in tasks]
    file = _SubmissionFile(out, unsolved)
    summary = RunSummary()
    devices = worker_devices(workers)
    config = compile_for_run(config, torch.device(devices[0]).type, time_limit)
    ordered = sorted(unsolved, key=task_size)
    size = config.shard_size(len(unsolved), len(devices))
    pending = [_Shard(ordered[i:i + size]) for i in range(0, len(ordered), size)]

    bar = progress(total=len(unsolved), desc="tasks", disable=quiet, mininterval=10)
    pool = _Pool(devices, network, config, solve_shard)

    def record(outcome: TaskOutcome) -> None:
        summary.outcomes[outcome.task_id] = outcome
        file.add(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
        bar.update(1)
        bar.set_postfix(projected=f"{(time.monotonic() - start) * len(unsolved) / len(summary.outcomes):.0f}s")

    try:
        while (pending or pool.busy()) and pool.workers and time.monotonic() < deadline:
            _dispatch(pool, pending, deadline, config)
            timeout = min(deadline - time.monotonic(), file.seconds_to_next_write())
            for worker, kind, payload in pool.wait(timeout=max(0.0, timeout)):
                if kind == "log":
                    print_above_bar(payload)
                elif kind == "task":
                    worker.shard.reported.add(payload.task_id)
                    if not payload.failed:
                        pool.deaths_in_a_row[worker.slot] = 0
                    record(payload)
                elif kind == "done":
                    worker.shard = None
                else:
                    for outcome in _after_death(pool, worker, payload, pending, deadline, summary):
                        record(outcome)
            if file.seconds_to_next_write() == 0:
                file.flush()
        if pending and not pool.workers:
            print_above_bar("no worker left: the remaining tasks keep their fallback attempts")
            for outcome in [TaskOutcome.failure(t, "not run: every worker died") for shard in pending for t in shard.tasks]:
                record(outcome)
    finally:
        bar.close()
        pool.stop()
        file.flush()
    summary.seconds = time.monotonic() - start
    summary.unfinished = [t.id for t in unsolved if t.id not in summary.outcomes]
    return summary


def print_above_bar(line: str) -> None:
    """A line on stderr, printed above the progress bar rather than through it."""
    write_line(line)


def _dispatch(pool: _Pool, pending: list[_Shard], deadline: float, config: FinetuneConfig) -> None:
    """Give each idle worker the next shard, with its share of the time left."""
    for worker in pool.idle():
        if not pending:
            return
        now = time.monotonic()
        in_flight = sum(len(w.shard.tasks) for w in pool.workers if w.shard is not None)
        share = (deadline - now) * len(pool.workers) / (sum(len(s.tasks) for s in pending) + in_flight)
        shard = pending[0]
        seconds = min(min(share, config.max_task_seconds) * len(shard.tasks), deadline - now)
        seconds -= min(SHARD_MARGIN * seconds, MAX_SHARD_MARGIN)  # a shard that overruns its estimate is cut off
        if pool.send(worker, shard, seconds, deadline - now):
            pending.pop(0)


def _after_death(pool: _Pool, worker: _Worker, exit_code: int | None, pending: list[_Shard], deadline: float,
                 summary: RunSummary) -> list[TaskOutcome]:
    """Retry or fail the tasks a dead worker had not reported, and start a new worker on its device
    if time allows; returns the outcomes of tasks failed here."""
    shard, name, device = worker.shard, f"worker {worker.slot}", pool.devices[worker.slot]
    pool.deaths_in_a_row[worker.slot] += 1
    lost = []
    if shard is None or not shard.left():
        print_above_bar(f"{name} exited (code {exit_code})")
    elif shard.starts < SHARD_STARTS:
        print_above_bar(f"{name} died (exit code {exit_code}) while solving {_ids(shard)}: trying them again")
        pending.insert(0, _Shard(shard.left(), starts=shard.starts))
    else:
        print_above_bar(f"{name} died (exit code {exit_code}) while solving {_ids(shard)}, a second time: failed")
        lost = [TaskOutcome.failure(t, f"its worker died twice (exit code {exit_code})") for t in shard.left()]
    if deadline - time.monotonic() < NEW_WORKER_SECONDS:
        print_above_bar(f"{name} not replaced: too little time left")
    elif not pool.can_restart(worker.slot):
        print_above_bar(f"{name} not replaced: {DEATHS_WITHOUT_PROGRESS} workers in a row on {device} ended "
                        "without finishing a task")
    else:
        pool.start(worker.slot)
        summary.replaced_workers += 1
        print_above_bar(f"{name} replaced by a new worker on {device}")
    return lost


def _ids(shard: _Shard) -> str:
    return ", ".join(t.id for t in shard.left())


def _record(submission: dict, outcome: TaskOutcome) -> None:
    """Put a task's two best candidates into its slots (one candidate keeps the fallback second)."""
    for index, ranked in enumerate(outcome.ranked):
        if ranked:
            set_attempts(submission, outcome.task_id, index, [np.array(g, dtype=np.uint8) for g in ranked[:2]])
