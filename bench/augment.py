"""Augmentation benchmark: ``python -m bench.augment``.

Encodes every demonstration and test pair of ARC-AGI-1 (training + evaluation) under up to 1000
augmentations each, with a fresh random translation per pair, through the numba kernel, and a
regular sample of the same stream through the NumPy twin; prints pairs per second for each and the
ratio. Also times building the augmentation tables of ARC-AGI-1 and ARC-AGI-2 (all tasks).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from arc_data import CANVAS, load_bundled
from arc_data.progress import progress
from augment.kernels import GridPool, encode_batch, encode_batch_numpy, encode_pairs
from augment.tables import augmentation_table


def task_pairs(task) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(task.train) + list(zip(task.test_inputs, task.test_outputs or ()))


def build_tables(tasks, num_aug: int, seed: int) -> tuple[list, float]:
    start = time.perf_counter()
    tables = [augmentation_table(t, num_aug, seed) for t in progress(tasks, desc="tables", leave=False)]
    return tables, time.perf_counter() - start


def encode_stream(tasks, tables, twin_every: int, seed: int) -> dict:
    """Encode every (augmentation, pair) of every task; every ``twin_every``-th augmentation also
    through the NumPy twin, checked equal to the kernel's output."""
    rng = np.random.default_rng(seed)
    kernel_seconds = twin_seconds = 0.0
    kernel_pairs = twin_pairs = 0
    for task, table in progress(list(zip(tasks, tables)), desc="encode", leave=False):
        pairs = task_pairs(task)
        pool = GridPool.from_grids([g for pair in pairs for g in pair])
        num_aug, num_pairs = len(table), len(pairs)
        aug = np.repeat(np.arange(num_aug), num_pairs)
        inputs = np.tile(np.arange(num_pairs) * 2, num_aug)
        dihedrals, colour_maps = table.dihedrals[aug], table.colour_maps[aug]
        start = time.perf_counter()
        tokens_in, tokens_out, offsets = encode_pairs(pool, inputs, inputs + 1, dihedrals, colour_maps, CANVAS, rng)
        kernel_seconds += time.perf_counter() - start
        kernel_pairs += len(inputs)

        sample = np.flatnonzero(aug % twin_every == 0)
        start = time.perf_counter()
        twin_in = encode_batch_numpy(pool, inputs[sample], dihedrals[sample], colour_maps[sample], offsets[sample], CANVAS)
        twin_out = encode_batch_numpy(pool, inputs[sample] + 1, dihedrals[sample], colour_maps[sample], offsets[sample], CANVAS)
        twin_seconds += time.perf_counter() - start
        twin_pairs += len(sample)
        if not (np.array_equal(twin_in, tokens_in[sample]) and np.array_equal(twin_out, tokens_out[sample])):
            raise AssertionError(f"task {task.id}: numba kernel and NumPy twin disagree")
    return {"kernel_pairs": kernel_pairs, "kernel_seconds": kernel_seconds,
            "twin_pairs": twin_pairs, "twin_seconds": twin_seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.augment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-aug", type=int, default=1000, help="augmentations per task (default 1000)")
    parser.add_argument("--twin-every", type=int, default=20,
                        help="run every N-th augmentation through the NumPy twin too (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # Compile (or load from cache) before timing.
    warm = GridPool.from_grids([np.zeros((2, 3), np.uint8)])
    encode_batch(warm, np.zeros(1), np.zeros(1), np.arange(10)[None], np.zeros((1, 2)), CANVAS)

    arc1 = load_bundled("arc-agi-1", "train") + load_bundled("arc-agi-1", "eval")
    arc2 = load_bundled("arc-agi-2", "train") + load_bundled("arc-agi-2", "eval")
    tables1, seconds1 = build_tables(arc1, args.num_aug, args.seed)
    tables2, seconds2 = build_tables(arc2, args.num_aug, args.seed)
    stats = encode_stream(arc1, tables1, args.twin_every, args.seed)

    kernel_rate = stats["kernel_pairs"] / stats["kernel_seconds"]
    twin_rate = stats["twin_pairs"] / stats["twin_seconds"]
    versions = sum(len(t) for t in tables1)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"tables  ARC-AGI-1: {len(arc1)} tasks, {versions} versions in {seconds1:.1f} s; "
          f"ARC-AGI-2: {len(arc2)} tasks, {sum(len(t) for t in tables2)} versions in {seconds2:.1f} s; "
          f"both {seconds1 + seconds2:.1f} s")
    print(f"encode  numba kernel: {stats['kernel_pairs']:,} pairs in {stats['kernel_seconds']:.2f} s "
          f"= {kernel_rate:,.0f} pairs/s")
    print(f"encode  NumPy twin:   {stats['twin_pairs']:,} pairs in {stats['twin_seconds']:.2f} s "
          f"= {twin_rate:,.0f} pairs/s (identical output)")
    print(f"speed-up: {kernel_rate / twin_rate:.1f}x")


if __name__ == "__main__":
    main()
