"""The worker process of a submission run: one per device, solving the shards its parent sends.

    parent -> worker: (tasks, seconds, sent, run_seconds) per shard, then None to stop
    worker -> parent: ("log", line) at any time, ("task", outcome) the moment a task is predicted
                      or failed, ("done", None) when the shard is finished

Every outcome leaves the worker as soon as it is made, so a worker that dies later loses only the
task in flight. A shard that raises fails only the tasks not yet reported; a CUDA error other than
out-of-memory leaves the process's CUDA context unusable, so the worker then exits with
``BROKEN_CONTEXT_EXIT`` and its parent starts another.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Callable

import torch

from arc_data.tasks import Task
from pretrain.cpu_matmul import use_onednn_matmul
from submission.config import FinetuneConfig
from submission.finetune import Network, TaskOutcome, cuda_context_broken, describe, free_memory

# Exit code of a worker that leaves because its CUDA context is broken.
BROKEN_CONTEXT_EXIT = 3

Solver = Callable[..., list[TaskOutcome]]  # solve_shard's signature


def worker_main(name: str, device_name: str, network: Network, config: FinetuneConfig, conn: Connection,
                solve: Solver) -> None:
    """Solve the shards sent on ``conn`` until told to stop (None); ``solve`` is ``solve_shard``."""
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # first: nothing may create a context on another GPU
    else:
        use_onednn_matmul()
    torch.set_num_threads(1)
    # The first optimizer a process builds imports torch._dynamo, 2-3 s on a slow CPU: import it
    # now, so that the first task does not lose that time from its fine-tuning share.
    importlib.import_module("torch._dynamo")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32

    def log(line: str) -> None:
        conn.send(("log", f"{name}: {line}"))

    def report(outcome: TaskOutcome) -> None:
        log(task_line(outcome))
        conn.send(("task", outcome))

    log(f"pid {os.getpid()}, {memory_line(device)}")
    while (job := conn.recv()) is not None:
        tasks, seconds, sent, run_seconds = job
        waited = time.time() - sent  # the share counts from when it was handed out (a worker may still be starting)
        latest_end = time.perf_counter() + run_seconds - waited
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        broken = solve_safely(solve, tasks, network, config, device, seconds - waited, dtype,
                              report=report, log=log, latest_end=latest_end)
        conn.send(("done", None))
        if broken:
            log("its CUDA context is broken: exiting, to be replaced")
            sys.exit(BROKEN_CONTEXT_EXIT)
        free_memory(device)  # between shards, as the one process holds a device for hours
        log(memory_line(device))


def solve_safely(solve: Solver, tasks: list[Task], network: Network, config: FinetuneConfig, device: torch.device,
                 seconds: float, dtype: torch.dtype, *, report: Callable[[TaskOutcome], None],
                 log: Callable[[str], None], latest_end: float) -> bool:
    """Solve the shard, reporting each outcome; if it raises, every task not yet reported fails with
    the error's line. Returns whether the CUDA context broke."""
    reported: set[str] = set()

    def report_once(outcome: TaskOutcome) -> None:
        reported.add(outcome.task_id)
        report(outcome)

    try:
        solve(tasks, network, config, device, seconds, dtype, report=report_once, log=log, latest_end=latest_end)
        return False
    except Exception as error:  # a failure stays inside its shard: its tasks fail, the run goes on
        left = [t for t in tasks if t.id not in reported]
        log(f"{', '.join(t.id for t in left)} failed: {traceback.format_exc().rstrip()}")
        for task in left:
            report(TaskOutcome.failure(task, describe(error)))
        return cuda_context_broken(error)


def memory_line(device: torch.device) -> str:
    """The device and its memory: free and total GPU memory on CUDA, the process's peak RSS elsewhere."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        peak = torch.cuda.max_memory_allocated(device)
        return (f"{device} ({torch.cuda.get_device_name(device)}): {free / 2**30:.1f} of {total / 2**30:.1f} GiB "
                f"free, peak allocated {peak / 2**30:.2f} GiB")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return f"{device}: peak RSS {peak_rss * scale / 2**30:.2f} GiB"


def task_line(outcome: TaskOutcome) -> str:
    """One line of progress per task: id, steps and batch, views, seconds, note (or why it failed)."""
    if outcome.failed:
        return f"task {outcome.task_id} failed: {outcome.note}"
    seconds = outcome.finetune_seconds + outcome.inference_seconds
    micro = f" (micro-batch {outcome.micro_batch})" if 0 < outcome.micro_batch < outcome.batch else ""
    warmup = f", compiled in {outcome.warmup_seconds:.1f} s first" if outcome.warmup_seconds else ""
    return (f"task {outcome.task_id}: {outcome.finetune_steps} steps at batch {outcome.batch}{micro}, {outcome.views} views "
            f"at batch {outcome.inference_batch}, {seconds:.1f} s{warmup}, {outcome.note}")
