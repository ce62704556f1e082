"""Paths and helpers shared by the tests: import them from here rather than redefining them per file."""

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import orjson
from hypothesis import strategies as st

from arc_data import load_bundled
from arc_data.tasks import Task
from augment.augmentation import Augmentation

ROOT = Path(__file__).resolve().parents[1]  # the repository root: the commands' working directory
# Checkpoints and outputs of the official TRM/HRM code, next to the repository (see its README.md).
OFFICIAL_FIXTURES = ROOT.parent / "shared" / "fixtures" / "official"


# -- the project's commands in a subprocess (tests that use these are marked ``cli``) -------------

def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a command under test: one thread (the machine is shared with other tests),
    not taken for a Kaggle run, plus ``extra``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    if "KAGGLE_KERNEL_RUN_TYPE" not in extra:
        env.pop("KAGGLE_KERNEL_RUN_TYPE", None)
    return env


def run_cli(args: Sequence, env_extra: dict[str, str] | None = None, timeout: float = 300,
            **kwargs) -> subprocess.CompletedProcess:
    """``python ARGS`` run to its end in the repository root, its output captured as text."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=cli_env(**(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def start_cli(args: Sequence, env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """``python ARGS`` started in the repository root, stdout and stderr piped as text."""
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=cli_env(**(env_extra or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def call_main(main: Callable[[list[str]], int], capsys, *args) -> tuple[int, str, str]:
    """A command's ``main(argv)`` in this process: (exit code, stdout, stderr). An argparse error
    (``SystemExit``) gives its code, as the command would."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- task files --------------------------------------------------------------------------------

def write_kaggle_files(folder: Path, tasks: Iterable[Task]) -> tuple[Path, Path]:
    """The tasks in Kaggle's layout: ``folder/challenges.json`` (demonstrations and test inputs) and
    ``folder/solutions.json`` (the test outputs of the tasks that have them)."""
    tasks = list(tasks)
    challenges, solutions = folder / "challenges.json", folder / "solutions.json"
    challenges.write_bytes(orjson.dumps({t.id: {"train": t.to_json()["train"],
                                                "test": [{"input": g.tolist()} for g in t.test_inputs]}
                                         for t in tasks}))
    solutions.write_bytes(orjson.dumps({t.id: [g.tolist() for g in t.test_outputs] for t in tasks
                                        if t.has_solutions}))
    return challenges, solutions


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


@st.composite
def random_grids(draw, max_side: int = 30) -> np.ndarray:
    """A hypothesis strategy: a grid of 1..max_side rows and columns of random colours."""
    rows, cols = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    cells = draw(st.lists(st.integers(0, 9), min_size=rows * cols, max_size=rows * cols))
    return np.array(cells, dtype=np.uint8).reshape(rows, cols)


@st.composite
def random_augmentations(draw, max_scale: int = 1) -> Augmentation:
    """A hypothesis strategy: any dihedral transform and colour permutation, upscaled by 1..max_scale."""
    colours = draw(st.permutations(range(1, 10)))
    return Augmentation(draw(st.integers(0, 7)), (0, *colours), draw(st.integers(1, max_scale)))
