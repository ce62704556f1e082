"""Write ``submission.json`` for a set of ARC tasks, and score it when the solutions are known.

    python make_submission.py --split eval                      # bundled ARC-AGI-2 evaluation set, CPU preset
    python make_submission.py --challenges arc-agi_test_challenges.json [--solutions FILE]
    python make_submission.py --checkpoint runs/trm-arc2/export --preset kaggle-4xl4 --time-limit 41400
    python make_submission.py --checkpoint step_220708 --recipe nvarc-trm-031 --preset kaggle-nvarc

For every task: fine-tune the network on its demonstrations (when no ``--checkpoint`` is given, the
small network shipped in submission/pretrained/small-arc, pretrained on ARC training tasks within
10x10; ``--fresh`` for a fresh one), predict every test input under many augmented views, map back, vote,
and keep the two best candidates. The file is pre-filled and written before any model work and
rewritten after every task, so it is valid at every moment. On Kaggle the challenges file and the
output path are found automatically.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, SPLITS, load_bundled, load_kaggle
from arc_data.tasks import Task, select
from augment.voting import RANK_KEYS, grid_key
from pretrain.config import SettingError, parse_setting, replaced_fields
from pretrain.export import ExportError, refuse_pretrained_tasks
from pretrain.import_official import OFFICIAL_RECIPES
from pretrain.kaggle_facts import KAGGLE_TIME_LIMIT, TEST_CHALLENGES
from submission import kaggle_env
from submission.config import (FINETUNE_PRESETS, KAGGLE_RERUN_PRESET, KAGGLE_VISIBLE_PRESET, SHIPPED_NETWORK,
                               FinetuneConfig, fresh_model_config)
from submission.candidates import CandidateLog
from submission.network import Network
from submission.runner import RunSummary, run_submission
from submission.scoring import format_score, score_submission
from submission.writer import SubmissionError, prefill, prepare_output, read_submission, write_submission

BAD_INPUT = 2
ALL_TASKS_FAILED = 1  # the run itself failed; the file still holds valid fallback attempts
FAILED_NOTES_SHOWN = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(BUNDLED), default="arc-agi-2", help="bundled dataset")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="split of the bundled dataset")
    parser.add_argument("--challenges", type=Path, help="Kaggle-layout challenges file (instead of --dataset)")
    parser.add_argument("--solutions", type=Path, help="Kaggle-layout solutions, to score the result")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--checkpoint", type=Path, help="exported network (python -m pretrain.export), or a "
                       "checkpoint file of the official TRM/HRM code, imported on the fly; default: the small "
                       "network shipped in submission/pretrained/small-arc")
    start.add_argument("--fresh", action="store_true", help="fine-tune a freshly initialised network on each task")
    parser.add_argument("--recipe", choices=sorted(OFFICIAL_RECIPES), help="official checkpoint without an all_config.yaml "
                                                                  "beside it: its known config")
    parser.add_argument("--config", type=Path, help="official checkpoint: its all_config.yaml (default: beside it)")
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                        help="official checkpoint: change a config value, e.g. --set seq_len=900 H_cycles=4")
    parser.add_argument("--preset", choices=sorted(FINETUNE_PRESETS), help="fine-tuning preset (default: cpu, or "
                                                                  "kaggle-nvarc / kaggle-placeholder on Kaggle)")
    parser.add_argument("--finetune", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                        help="change a field of the fine-tuning preset (submission/config.py FinetuneConfig), "
                             "e.g. --finetune stop_when_fitted=5 max_scale=2")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole run (default: 840, or "
                                                         f"{KAGGLE_TIME_LIMIT} on Kaggle)")
    parser.add_argument("--shard-tasks", type=int,
                        help="fine-tune one network jointly on N tasks at a time (default: the preset's; "
                             "1: per task)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per GPU, else one per CPU core)")
    parser.add_argument("--out", type=Path, help="where to write (default submission.json)")
    parser.add_argument("--limit", type=int, help="only the first N tasks (quick checks)")
    parser.add_argument("--max-side", type=int, metavar="N",
                        help="only the tasks whose every grid (test outputs included when known) fits N x N "
                             "(local runs: the file then holds only those tasks)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random choice of the run: augmentations, views, fine-tuning order, "
                             "halting, a fresh network's weights (default 0)")
    parser.add_argument("--selector", choices=sorted(RANK_KEYS),
                        help="how the candidates are ranked into the two attempts (default: the preset's)")
    parser.add_argument("--candidates", type=Path, metavar="FILE",
                        help="also write every candidate with its evidence (votes, confidences, per-view "
                             "log-probabilities) as JSON lines, each task's as it finishes, to compare selectors "
                             "offline (python -m bench.submission --selectors FILE)")
    parser.add_argument("--steps", type=int, metavar="N",
                        help="fine-tuning steps per task, for reproducible runs (default: the preset's; "
                             "the cpu preset fine-tunes for the whole time share)")
    parser.add_argument("--allow-pretrained-tasks", action="store_true",
                        help="score the network even on tasks it was pretrained on (its pretrained_on.json lists "
                             "them; refused by default: such a score measures memory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on where we run (Kaggle or not)."""
    on_kaggle = kaggle_env.is_kaggle()
    if on_kaggle and args.challenges is None:
        paths = kaggle_env.kaggle_paths()
        args.challenges = kaggle_env.find_test_challenges(paths.input_root)
        if args.challenges is None:
            raise ArcDataError(f"no {TEST_CHALLENGES} under {paths.input_root}")
        args.out = args.out or paths.submission
    if args.preset is None:
        if on_kaggle:
            args.preset = KAGGLE_RERUN_PRESET if kaggle_env.is_competition_rerun() else KAGGLE_VISIBLE_PRESET
        else:
            args.preset = "cpu"
    if args.time_limit is None:
        args.time_limit = KAGGLE_TIME_LIMIT if on_kaggle else 840.0
    args.out = args.out or Path("submission.json")
    if args.checkpoint is None and not args.fresh:
        args.checkpoint = SHIPPED_NETWORK
    return args


def load_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = load_kaggle(args.challenges, args.solutions) if args.challenges else load_bundled(args.dataset, args.split)
    chosen = select(tasks, args.max_side, args.limit or None)
    if not chosen:
        raise ArcDataError(f"no task fits {args.max_side} x {args.max_side}")  # only --max-side can empty it
    return chosen


def load_network(checkpoint: Path | None, recipe: str | None = None, config: Path | None = None,
                 sets: Sequence[Sequence[str]] = (), seed: int = 0) -> Network:
    """The network the run starts from: ``checkpoint`` (see ``Network.from_checkpoint``), or a fresh
    one when it is None (``--fresh``). Raises ``ExportError`` (one line) on any problem."""
    if checkpoint is None:
        if recipe or config or sets:
            raise ExportError("--recipe, --config and --set apply only to a checkpoint file of the official TRM/HRM code")
        print("--fresh: fine-tuning a freshly initialised network on each task")
        return Network.fresh_init(fresh_model_config(), seed=seed)
    if checkpoint == SHIPPED_NETWORK:
        if not checkpoint.exists():
            raise ExportError(f"{checkpoint}: the shipped network is missing from this installation; "
                              "pass --checkpoint or --fresh")
        print("no --checkpoint: starting from the small network shipped in submission/pretrained/small-arc, "
              "pretrained on ARC training tasks within 10x10 (--fresh for a fresh one)")
    network = Network.from_checkpoint(checkpoint, recipe=recipe, config=config,
                                      sets=[item for group in sets for item in group])
    print(f"starting from {network.source}")
    return network


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


def argument_problem(args: argparse.Namespace) -> str | None:
    """A number that would run nothing, or forever: one line, before any work."""
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        return f"--time-limit must be a positive number of seconds, got {args.time_limit:g}"
    for flag, value in (("--workers", args.workers), ("--limit", args.limit), ("--shard-tasks", args.shard_tasks),
                        ("--max-side", args.max_side), ("--steps", args.steps)):
        if value is not None and value < 1:
            return f"{flag} must be at least 1, got {value}"
    return None


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The preset with the command's changes: ``--finetune`` first, then the dedicated options. A
    SettingError (a ValueError) names a field the preset does not have or a value it refuses."""
    try:
        changes = dict(parse_setting(item, "--finetune") for group in args.finetune for item in group)
    except ValueError as error:
        raise SettingError(str(error)) from None
    config = replaced_fields(FINETUNE_PRESETS[args.preset](), changes, "the fine-tuning preset", "--finetune")
    if args.shard_tasks is not None:
        config = dataclasses.replace(config, shard_tasks=args.shard_tasks, shard_per_worker=False)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    return dataclasses.replace(config, seed=args.seed, keep_evidence=args.candidates is not None,
                               selector=args.selector or config.selector)


def write_fallback(out: Path, tasks: list[Task]) -> None:
    """A complete, valid file before the run, written once the input (tasks, network) has loaded: bad
    input leaves an existing file as it was, and a crash during the run leaves a valid one."""
    unsolved = [task.without_solutions() for task in tasks]
    write_submission(out, prefill(unsolved), unsolved)


def report_outcomes(tasks: list[Task], summary: RunSummary, out: Path, seconds: float) -> int:
    """Print what the run did, failed tasks apart with their notes; the exit status."""
    failed = summary.failed
    print(f"wrote {out} in {seconds:.0f} s: {len(summary.predicted)} tasks predicted, {len(summary.unfinished)} left with "
          f"fallback attempts, {len(failed)} failed")
    for outcome in failed[:FAILED_NOTES_SHOWN]:
        note = " ".join(outcome.note.split())  # one line, whatever the exception's message held
        print(f"  task {outcome.task_id}: {note}")
    if len(failed) > FAILED_NOTES_SHOWN:
        print(f"  ... and {len(failed) - FAILED_NOTES_SHOWN} more failed tasks")
    if tasks and len(failed) == len(tasks):
        print(f"error: every task failed; {out} holds the fallback attempts only", file=sys.stderr)
        return ALL_TASKS_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = argument_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return BAD_INPUT
    try:
        args = resolve(args)
        prepare_output(args.out)  # refuses a device, FIFO or directory; creates a missing folder
        if args.candidates is not None:
            prepare_output(args.candidates)
        tasks = load_tasks(args)
        if not args.allow_pretrained_tasks:
            refuse_pretrained_tasks(args.checkpoint, tasks)
        config = finetune_config(args)
        network = load_network(args.checkpoint, args.recipe, args.config, args.set, seed=args.seed)
        write_fallback(args.out, tasks)
        candidate_log = CandidateLog(args.candidates, tasks, args.seed) if args.candidates is not None else None
    except (ArcDataError, SubmissionError, ExportError, OSError, SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    print(f"{len(tasks)} tasks, {sum(len(t.test_inputs) for t in tasks)} test inputs; preset {args.preset}, "
          f"time limit {args.time_limit:.0f} s; writing {args.out}")
    started = time.monotonic()
    summary = run_submission(tasks, network, config, args.out, args.time_limit, args.workers, args.quiet,
                             on_outcome=candidate_log.add if candidate_log is not None else None)
    status = report_outcomes(tasks, summary, args.out, time.monotonic() - started)
    if candidate_log is not None:
        print(f"wrote the candidates of {candidate_log.written} tasks to {args.candidates}")
    if all(t.has_solutions for t in tasks):
        print(format_score(score_submission(read_submission(args.out), tasks)))
        print(candidate_report(tasks, summary))
    return status


if __name__ == "__main__":
    sys.exit(main())
