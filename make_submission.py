"""Write ``submission.json`` for a set of ARC tasks, and score it when the solutions are known.

    python make_submission.py --split eval                      # bundled ARC-AGI-2 evaluation set, CPU preset
    python make_submission.py --challenges arc-agi_test_challenges.json [--solutions FILE]
    python make_submission.py --checkpoint runs/trm-arc2/export --preset kaggle-4xl4 --time-limit 41400

For every task: fine-tune the network on its demonstrations (a fresh network when no
``--checkpoint`` is given), predict every test input under many augmented views, map back, vote,
and keep the two best candidates. The file is pre-filled and written before any model work and
rewritten after every task, so it is valid at every moment. On Kaggle the challenges file and the
output path are found automatically.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, SPLITS, load_bundled, load_kaggle
from arc_data.tasks import Task, select
from submission import kaggle_env
from submission.config import PRESETS, fresh_model_config
from submission.finetune import Network
from submission.runner import RunSummary, run_submission
from submission.scoring import format_score, score_submission
from submission.voting import grid_key
from submission.writer import SubmissionError, read_submission

BAD_INPUT = 2
# On Kaggle: 12 hours for the whole notebook, minus installs, loading and a safety margin.
KAGGLE_TIME_LIMIT = 12 * 3600 - 45 * 60


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(BUNDLED), default="arc-agi-2", help="bundled dataset")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="split of the bundled dataset")
    parser.add_argument("--challenges", type=Path, help="Kaggle-layout challenges file (instead of --dataset)")
    parser.add_argument("--solutions", type=Path, help="Kaggle-layout solutions, to score the result")
    parser.add_argument("--checkpoint", type=Path, help="exported network (python -m pretrain.export); "
                                                         "default: a fresh network")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="fine-tuning preset (default: cpu, or "
                                                                  "kaggle-4xl4 / kaggle-placeholder on Kaggle)")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole run (default: 840, or "
                                                         f"{KAGGLE_TIME_LIMIT} on Kaggle)")
    parser.add_argument("--shard-tasks", type=int, default=1,
                        help="fine-tune one network jointly on N tasks at a time (default 1: per task)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per GPU, else one per CPU core)")
    parser.add_argument("--out", type=Path, help="where to write (default submission.json)")
    parser.add_argument("--limit", type=int, help="only the first N tasks (quick checks)")
    parser.add_argument("--max-side", type=int, metavar="N",
                        help="only the tasks whose every grid (test outputs included when known) fits N x N "
                             "(local runs: the file then holds only those tasks)")
    parser.add_argument("--steps", type=int, metavar="N",
                        help="fine-tuning steps per task, for reproducible runs (default: the preset's; "
                             "the cpu preset fine-tunes for the whole time share)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on where we run (Kaggle or not)."""
    on_kaggle = kaggle_env.is_kaggle()
    if on_kaggle and args.challenges is None:
        paths = kaggle_env.kaggle_paths()
        args.challenges = kaggle_env.find_test_challenges(paths.input_root)
        if args.challenges is None:
            raise ArcDataError(f"no arc-agi_test_challenges.json under {paths.input_root}")
        args.out = args.out or paths.working_root / "submission.json"
    if args.preset is None:
        if on_kaggle:
            args.preset = "kaggle-4xl4" if kaggle_env.is_competition_rerun() else "kaggle-placeholder"
        else:
            args.preset = "cpu"
    if args.time_limit is None:
        args.time_limit = KAGGLE_TIME_LIMIT if on_kaggle else 840.0
    args.out = args.out or Path("submission.json")
    return args


def load_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = load_kaggle(args.challenges, args.solutions) if args.challenges else load_bundled(args.dataset, args.split)
    chosen = select(tasks, args.max_side, args.limit or None)
    if not chosen:
        raise ArcDataError(f"no task fits {args.max_side} x {args.max_side}")  # only --max-side can empty it
    return chosen


def load_network(checkpoint: Path | None) -> Network:
    if checkpoint is None:
        print("no --checkpoint: fine-tuning a FRESH network on each task (expect a near-zero score; "
              "pretrain one with python -m pretrain)")
        return Network.fresh_init(fresh_model_config())
    if not (checkpoint / "model.json").exists():
        raise ArcDataError("is not an exported network (no model.json; see python -m pretrain.export)",
                           source=str(checkpoint))
    from pretrain.export import load_exported
    model, puzzle_mean = load_exported(checkpoint)
    return Network(model.config, model.state_dict(), puzzle_mean, fresh=False)


def candidate_report(tasks: list[Task], summary: RunSummary) -> str:
    """pass@1, pass@2 and pass@K per task (K: the most candidates any test input got) from the ranked
    candidates, so the gap between selection and the oracle is visible."""
    ks = sorted({1, 2, max((len(r) for o in summary.outcomes.values() for r in o.ranked), default=2)})
    per_task = {k: [] for k in ks}
    for task in tasks:
        outcome = summary.outcomes.get(task.id)
        ranked_keys = [[grid_key(np.array(g, np.uint8)) for g in ranked] for ranked in outcome.ranked] if outcome else None
        for k in ks:
            hits = [ranked_keys is not None and grid_key(truth) in ranked_keys[i][:k]
                    for i, truth in enumerate(task.test_outputs)]
            per_task[k].append(float(np.mean(hits)))
    return "  ".join(f"pass@{k} {100 * np.mean(v):.2f}%" for k, v in per_task.items()) + "  (candidates, per task)"


def main(argv: list[str] | None = None) -> int:
    try:
        args = resolve(parse_args(argv))
        tasks = load_tasks(args)
        network = load_network(args.checkpoint)
    except (ArcDataError, SubmissionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    config = dataclasses.replace(PRESETS[args.preset](), shard_tasks=max(1, args.shard_tasks))
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    print(f"{len(tasks)} tasks, {sum(len(t.test_inputs) for t in tasks)} test inputs; preset {args.preset}, "
          f"time limit {args.time_limit:.0f} s; writing {args.out}")
    started = time.monotonic()
    summary = run_submission(tasks, network, config, args.out, args.time_limit, args.workers, args.quiet)
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s: {len(summary.outcomes)} tasks predicted, "
          f"{len(summary.unfinished)} left with fallback attempts")
    if all(t.has_solutions for t in tasks):
        print(format_score(score_submission(read_submission(args.out), tasks)))
        print(candidate_report(tasks, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
