"""Score a submission file locally: pass@2 per task (the leaderboard's unit) and per test output.

    python evaluate.py submission.json --dataset arc-agi-2 --split eval
    python evaluate.py submission.json --solutions arc-agi_evaluation_solutions.json [--challenges FILE]
    python evaluate.py submission.json --dataset arc-agi-2 --report report/ [--report-limit N]
    python evaluate.py submission.json --dataset arc-agi-1 --max-side 8      # only the tasks within 8x8

Bad input prints one ``error: ...`` line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, SPLITS, load_bundled, load_kaggle, load_path
from arc_data.tasks import Task, select
from submission.scoring import DEFAULT_DATASET, Score, format_score, load_truth, score_file
from submission.writer import SubmissionError, read_submission

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
    parser.add_argument("--max-side", type=int, metavar="N",
                        help="score only the tasks whose every grid (test outputs included) fits N x N")
    parser.add_argument("--limit", type=int, metavar="N", help="score only the first N tasks (after --max-side)")
    parser.add_argument("--tasks", action="store_true", help="print the per-task table")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="write a PNG per task and DIR/index.html, failed tasks first")
    parser.add_argument("--report-limit", type=int, default=200, metavar="N",
                        help="draw at most N tasks, failures first (default 200)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dataset and (args.solutions or args.challenges):
        print("error: give --dataset or --solutions/--challenges, not both", file=sys.stderr)
        return BAD_INPUT
    if args.report is not None and args.solutions and not args.challenges:
        print("error: --report draws the demonstration pairs, so it needs --challenges with --solutions",
              file=sys.stderr)
        return BAD_INPUT
    if (args.max_side is not None or args.limit is not None) and args.solutions and not args.challenges:
        print("error: --max-side and --limit look at the tasks' grids, so they need --challenges with --solutions",
              file=sys.stderr)
        return BAD_INPUT
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be 1 or more, not {args.limit}", file=sys.stderr)
        return BAD_INPUT
    if args.report_limit < 0:
        print(f"error: --report-limit must be 0 or more, not {args.report_limit}", file=sys.stderr)
        return BAD_INPUT
    try:
        truth = load_truth(dataset=args.dataset, split=args.split, solutions=args.solutions,
                           challenges=args.challenges)
        if args.max_side is not None or args.limit is not None:
            truth = selected_truth(args, truth)
        score = score_file(args.submission, truth)
    except (ArcDataError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    if args.json:
        print(orjson.dumps(score.to_json()).decode())
    else:
        print(format_score(score, per_task=args.tasks))
    if args.report is not None:
        return write_report_for(args, score)
    return 0


def selected_truth(args: argparse.Namespace, truth: dict) -> dict:
    """The truth of the tasks that ``--max-side`` and ``--limit`` select (arc_data.tasks.select)."""
    chosen = select(report_tasks(args), args.max_side, args.limit)
    if not chosen:
        raise ArcDataError(f"no task fits {args.max_side} x {args.max_side}")
    return {t.id: truth[t.id] for t in chosen}


def report_tasks(args: argparse.Namespace) -> list[Task]:
    """The scored tasks with their demonstrations, from the same source as the truth."""
    if args.challenges is None:
        return load_bundled(args.dataset or DEFAULT_DATASET, args.split)
    if args.solutions is not None:
        return load_kaggle(args.challenges, args.solutions)
    return load_path(args.challenges)


def write_report_for(args: argparse.Namespace, score: Score) -> int:
    from submission.report import write_report  # matplotlib loads only when a report is asked for

    try:
        index = write_report(report_tasks(args), read_submission(args.submission), score, args.report,
                             limit=args.report_limit)
    except (ArcDataError, SubmissionError, OSError) as error:
        print(f"error: report: {error}", file=sys.stderr)
        return BAD_INPUT
    drawn = min(args.report_limit, score.tasks)
    print(f"report: {index} ({drawn} of {score.tasks} tasks drawn)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
