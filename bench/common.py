"""Helpers every benchmark shares: the device's name, peak memory, and waiting for the GPU.

Kept apart from the benchmarks themselves so that they import it and not one another.
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
from typing import Iterator
import resource
import sys

import torch

from pretrain.distributed import World, setup_world, teardown_world


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
