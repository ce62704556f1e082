"""Score a submission file locally: pass@2 per task (the leaderboard's unit) and per test output.

    python evaluate.py submission.json --dataset arc-agi-2 --split eval
    python evaluate.py submission.json --solutions arc-agi_evaluation_solutions.json [--challenges FILE]

Bad input prints one ``error: ...`` line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, SPLITS
from submission.scoring import DEFAULT_DATASET, format_score, load_truth, score_file
from submission.writer import SubmissionError

BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", type=Path, help="the submission.json to score")
    parser.add_argument("--dataset", choices=sorted(BUNDLED),
                        help=f"bundled dataset to score against (default {DEFAULT_DATASET})")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="split of the bundled dataset")
    parser.add_argument("--solutions", type=Path,
                        help="Kaggle-layout solutions {task_id: [grid, ...]}; alone, it defines the tasks")
    parser.add_argument("--challenges", type=Path,
                        help="Kaggle challenges file (checked against --solutions), or tasks that carry outputs")
    parser.add_argument("--tasks", action="store_true", help="print the per-task table")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dataset and (args.solutions or args.challenges):
        print("error: give --dataset or --solutions/--challenges, not both", file=sys.stderr)
        return BAD_INPUT
    try:
        truth = load_truth(dataset=args.dataset, split=args.split, solutions=args.solutions,
                           challenges=args.challenges)
        score = score_file(args.submission, truth)
    except (ArcDataError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    if args.json:
        print(orjson.dumps(score.to_json()).decode())
    else:
        print(format_score(score, per_task=args.tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
