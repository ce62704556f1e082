"""Write ``submission.json`` for a set of ARC tasks, and score it when the solutions are known.

    python make_submission.py --split eval                      # bundled ARC-AGI-2 evaluation set
    python make_submission.py --challenges arc-agi_test_challenges.json [--solutions FILE]

The file is pre-filled (every task, every test input, two attempts) and written before any other
work, so it is valid from the first second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, SPLITS, load_bundled, load_kaggle
from arc_data.tasks import Task
from submission.scoring import format_score, score_submission
from submission.writer import SubmissionError, prefill, write_submission

BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(BUNDLED), default="arc-agi-2", help="bundled dataset")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="split of the bundled dataset")
    parser.add_argument("--challenges", type=Path, help="Kaggle-layout challenges file (instead of --dataset)")
    parser.add_argument("--solutions", type=Path, help="Kaggle-layout solutions, to score the result")
    parser.add_argument("--out", type=Path, default=Path("submission.json"), help="where to write")
    return parser.parse_args(argv)


def load_tasks(args: argparse.Namespace) -> list[Task]:
    if args.challenges is not None:
        return load_kaggle(args.challenges, args.solutions)
    return load_bundled(args.dataset, args.split)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tasks = load_tasks(args)
        submission = prefill(tasks)
        write_submission(args.out, submission, tasks)
    except (ArcDataError, SubmissionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    print(f"wrote {args.out} ({len(tasks)} tasks, {sum(len(t.test_inputs) for t in tasks)} test inputs)")
    if all(t.has_solutions for t in tasks):
        print(format_score(score_submission(submission, tasks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
