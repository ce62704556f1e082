"""Run the submission: pre-fill, fine-tune and predict every task on worker processes, under one deadline.

The submission file is written, valid, before any model work, and rewritten atomically every time
a task finishes, so a kill at any moment leaves a valid file holding every finished task.

One worker process per device (one per GPU; on a CPU, ``--workers`` processes sharing the cores)
pulls tasks from a queue. Each task gets a time share that adapts to what is left:
``(time left) x workers / (tasks left)``, capped by the preset and by the time left; a task stops fine-tuning early to
keep time for inference, and inference stops adding views when the share runs out. Smaller tasks go
first, so when time runs short it is the largest (slowest, least likely solved) tasks that keep
their fallback attempts. When the deadline arrives, unfinished workers are stopped and the file
keeps whatever finished.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from arc_data.tasks import Task
from submission.config import FinetuneConfig
from submission.finetune import Network, TaskOutcome, solve_shard
from submission.writer import prefill, set_attempts, write_submission

# Seconds kept back from the deadline for stopping workers and the last write.
STOP_MARGIN = 5.0


@dataclass
class RunSummary:
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)
    seconds: float = 0.0
    unfinished: list[str] = field(default_factory=list)  # tasks left with their fallback attempts


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


def _worker(device: str, network: Network, config: FinetuneConfig, jobs, results) -> None:
    torch.set_num_threads(1)
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    while True:
        job = jobs.get()
        if job is None:
            return
        tasks, seconds, sent = job
        seconds -= time.time() - sent  # the share counts from when it was handed out (a worker may still be starting)
        try:
            outcomes = solve_shard(tasks, network, config, torch.device(device), seconds, dtype)
        except Exception as error:  # a failure stays inside its shard; the run goes on
            note = f"failed: {type(error).__name__}: {error}"
            outcomes = [TaskOutcome(t.id, [[] for _ in t.test_inputs], note=note) for t in tasks]
        results.put(outcomes)


def run_submission(tasks: list[Task], network: Network, config: FinetuneConfig, out: Path, time_limit: float,
                   workers: int | None = None, quiet: bool = False) -> RunSummary:
    """Fill ``out`` with the best attempts found for ``tasks`` within ``time_limit`` seconds."""
    start = time.monotonic()
    deadline = start + time_limit - STOP_MARGIN
    hidden = [t.without_solutions() for t in tasks]
    submission = prefill(hidden)
    write_submission(out, submission, hidden)
    summary = RunSummary()

    devices = worker_devices(workers)
    context = mp.get_context("spawn")
    jobs, results = context.Queue(), context.Queue()
    processes = [context.Process(target=_worker, args=(d, network, config, jobs, results), daemon=True)
                 for d in devices]
    for process in processes:
        process.start()

    pending = sorted(hidden, key=task_size)
    in_flight, busy = 0, 0  # tasks being solved, workers busy with a shard
    bar = tqdm(total=len(hidden), desc="tasks", disable=quiet, mininterval=10)
    try:
        while pending or in_flight:
            now = time.monotonic()
            if now >= deadline:
                break
            while pending and busy < len(processes):
                # Never more than the time left: with fewer tasks than workers, a task cannot use the others' time.
                share = min((deadline - now) * len(processes) / (len(pending) + in_flight), deadline - now)
                shard, pending = pending[:config.shard_tasks], pending[config.shard_tasks:]
                jobs.put((shard, min(share, config.max_task_seconds) * len(shard), time.time()))
                in_flight, busy = in_flight + len(shard), busy + 1
            try:
                outcomes = results.get(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            except queue.Empty:
                continue
            in_flight, busy = in_flight - len(outcomes), busy - 1
            for outcome in outcomes:
                summary.outcomes[outcome.task_id] = outcome
                _record(submission, outcome)
            write_submission(out, submission, hidden)
            bar.update(len(outcomes))
            bar.set_postfix(projected=f"{(time.monotonic() - start) * len(hidden) / len(summary.outcomes):.0f}s")
    finally:
        bar.close()
        for _ in processes:
            jobs.put(None)
        for process in processes:
            process.join(timeout=max(0.1, min(STOP_MARGIN / 2, deadline + STOP_MARGIN - time.monotonic())))
            if process.is_alive():
                process.terminate()
                process.join(timeout=1)
        write_submission(out, submission, hidden)
    summary.seconds = time.monotonic() - start
    summary.unfinished = [t.id for t in hidden if t.id not in summary.outcomes]
    return summary


def _record(submission: dict, outcome: TaskOutcome) -> None:
    """Put a task's two best candidates into its slots (one candidate keeps the fallback second)."""
    for index, ranked in enumerate(outcome.ranked):
        if ranked:
            set_attempts(submission, outcome.task_id, index, [np.array(g, dtype=np.uint8) for g in ranked[:2]])
