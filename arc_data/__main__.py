"""``python -m arc_data SOURCE``: check a task source and summarise it, or print the one-line error.

SOURCE is a Kaggle challenges file (with ``--solutions``), a single task file, a folder of task
files, or a bundled dataset written ``bundled:arc-agi-2/eval``, optionally followed by filters
(``,max-side=N``, ``,minus=SOURCE``, ``,part=K/N``, ``,not-part=K/N``; see ``arc_data.sources``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arc_data.grids import ArcDataError
from arc_data.sources import load_source
from arc_data.tasks import Task


def summary(tasks: list[Task]) -> str:
    pairs = sum(len(t.train) for t in tasks)
    tests = sum(len(t.test_inputs) for t in tasks)
    solved = sum(t.has_solutions for t in tasks)
    largest = max((g.shape for t in tasks for g in t.grids()), key=lambda s: (max(s), s[0] * s[1]))
    return (f"{len(tasks)} tasks, {pairs} demonstration pairs, {tests} test inputs, "
            f"{solved} tasks with test outputs, largest grid {largest[0]}x{largest[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arc_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="task file, folder of task files, or bundled:DATASET/SPLIT")
    parser.add_argument("--solutions", type=Path, help="Kaggle-layout solutions for a challenges file")
    args = parser.parse_args(argv)
    try:
        tasks = load_source(args.source, args.solutions)
    except ArcDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.source}: ok: {summary(tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
