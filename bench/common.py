"""Helpers every benchmark shares: the device's name, peak memory, waiting for the GPU, and the
tasks, seeds, networks and ``--set`` changes of the submission benchmarks, and their paired table.

Kept apart from the benchmarks themselves so that they import it and not one another.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from arc_data.sources import load_bundled, load_source
from arc_data.tasks import Task, select
from pretrain.config import SettingError, replaced_fields
from pretrain.distributed import World, setup_world, teardown_world
from submission.config import fresh_model_config
from submission.network import Network


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu {cpu} ({torch.get_num_threads()} threads)"


def peak_rss_bytes() -> int:
    """The process's peak resident set size since it started (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak on a GPU (a CPU's peak RSS cannot be reset: it counts from the process start)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes since the last reset, and what was measured."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    return peak_rss_bytes(), "cpu_peak_rss_of_process"


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


@contextmanager
def one_process_world(device: str | None, what: str) -> Iterator[World]:
    """The world of a benchmark that runs in one process; under torchrun it exits with status 2 and
    one line saying so."""
    world = setup_world(device)
    try:
        if world.size > 1:
            print(f"error: run the {what} in one process (not under torchrun)", file=sys.stderr)
            sys.exit(2)
        yield world
    finally:
        teardown_world()


def suite_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = load_source(args.source) if args.source else load_bundled(args.dataset, args.split)
    return select(tasks, args.max_side, args.limit)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SettingError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1") from None
    if not seeds:
        raise SettingError("--seeds: give at least one seed")
    return seeds


def load_network(checkpoint: str | None, fresh_changes: dict | None = None, seed: int = 0) -> Network:
    """The network at ``checkpoint`` (an export or an official checkpoint file, as make_submission
    loads it), or a fresh one (``fresh_changes``: fields of its ModelConfig) drawn from ``seed``."""
    if not checkpoint:
        return Network.fresh_init(replaced_fields(fresh_model_config(), fresh_changes or {}, "the model"), seed=seed)
    return Network.from_checkpoint(checkpoint)


def paired_table(scores: dict, baseline: tuple[str, str]) -> str:
    """One row per variant and selector: pass@2 per seed, the mean, the paired difference to
    ``baseline`` (variant, selector) as mean and standard deviation over the seeds, and the
    (seed, task) pairs it wins and loses against the baseline."""
    base = scores[baseline[0]][baseline[1]]
    seeds = list(base)
    head = (["variant", "selector"] + [f"seed {s}" for s in seeds]
            + ["mean", f"minus {baseline[0]}/{baseline[1]}", "tasks won / lost"])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, by_selector in scores.items():
        for selector, per_seed in by_selector.items():
            values = [float(np.mean(per_seed[s])) for s in seeds]
            diffs = [v - float(np.mean(base[s])) for v, s in zip(values, seeds)]
            spread = f" +- {100 * np.std(diffs, ddof=1):.2f}" if len(seeds) > 1 else ""
            pairs = [(a, b) for s in seeds for a, b in zip(per_seed[s], base[s])]
            won, lost = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
            lines.append("| " + " | ".join([name, selector] + [f"{100 * v:.2f}%" for v in values]
                                          + [f"{100 * np.mean(values):.2f}%", f"{100 * np.mean(diffs):+.2f}{spread}",
                                             f"{won} / {lost}"]) + " |")
    return "\n".join(lines)
