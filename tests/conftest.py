import functools

import numpy as np
import pytest
import torch

from arc_data import load_bundled


@functools.lru_cache(maxsize=None)
def real_grids() -> tuple[np.ndarray, ...]:
    """Every distinct grid of ARC-AGI-1 and ARC-AGI-2 (training and evaluation, test outputs included)."""
    grids = {}
    for dataset in ("arc-agi-1", "arc-agi-2"):
        for split in ("train", "eval"):
            for task in load_bundled(dataset, split):
                for grid in task.grids():
                    grids[(grid.shape, grid.tobytes())] = grid
    return tuple(grids.values())


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name: reproducible, and independent between tests."""
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)


@pytest.fixture
def one_thread():
    """Small forward passes run faster on one thread, and much faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
