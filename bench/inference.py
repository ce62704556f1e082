"""Inference options compared on the same fine-tuned networks: ``python -m bench.inference``.

Each task is fine-tuned once per seed for a fixed number of steps, then predicted under every
variant: changes of the inference fields (``submission.config.INFERENCE_FIELDS``: views,
samples_per_view, latent_noise, predict_overrides, ...). The variants differ in nothing else, so
the comparison is paired by construction and costs one fine-tuning per task and seed. It runs on
the CPU, ``--workers`` processes of one thread each. For every variant and selector it prints
pass@2 (the leaderboard's unit) per seed, the mean, and the paired difference to the first
variant's default selector, with how many (seed, task) pairs each side wins::

    python -m bench.inference --source "bundled:arc-agi-1/train,max-side=10,minus=bundled:arc-agi-1/eval,part=0/8" \\
        --allow-pretrained-tasks --steps 300 --seeds 0,1 \\
        --variant base={} --variant noise='{"latent_noise": 0.2, "samples_per_view": 4}'

``--candidates PREFIX`` writes each variant's candidates to ``PREFIX-NAME.jsonl`` (the format of
``submission.candidates``, for ``python -m bench.submission --selectors``), each task's the moment it
is done, so a run stopped halfway can still be scored. Tune on training tasks;
the evaluation split is for reporting.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import orjson
import torch

from arc_data.grids import ArcDataError
from arc_data.progress import progress, write_line
from arc_data.sources import BUNDLED, SPLITS
from arc_data.tasks import Task
from bench.common import load_network, paired_table, parse_seeds, suite_tasks
from pretrain.config import SettingError, parse_setting, replaced_fields
from pretrain.cpu_matmul import use_onednn_matmul
from pretrain.export import ExportError, refuse_pretrained_tasks
from submission.candidates import candidate_records, task_scores, write_candidates
from submission.config import FINETUNE_PRESETS, SHIPPED_NETWORK, FinetuneConfig, check_inference_changes
from submission.finetune import TaskOutcome, describe, solve_task_variants
from submission.network import Network


def parse_variants(items: list[str]) -> dict[str, dict]:
    """``NAME=JSON`` items, in order (the first is the baseline), each checked against INFERENCE_FIELDS
    (ValueError)."""
    variants = {}
    for item in items:
        name, changes = parse_setting(item)
        if not isinstance(changes, dict):
            raise SettingError(f"--variant {item!r}: expected NAME={{...}}, a JSON object of inference fields")
        check_inference_changes(name, changes)
        if name in variants:
            raise SettingError(f"--variant {name} is given twice")
        variants[name] = changes
    return variants or {"base": {}}


# Seconds between a worker's checks that the process which started it is still there.
PARENT_CHECK_SECONDS = 2.0


def _exit_with_parent(parent: int) -> None:
    """In each worker: end the process once its parent has gone (killed, say), instead of computing
    on for nobody."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _solve_job(task: Task, network: Network, config: FinetuneConfig,
               variants: dict[str, dict]) -> tuple[str, dict[str, TaskOutcome] | str, float]:
    """One task at one seed, in a worker process: its outcome per variant, or the one-line error."""
    torch.set_num_threads(1)
    use_onednn_matmul()
    start = time.perf_counter()
    try:
        outcomes = solve_task_variants(task, network, config, variants, torch.device("cpu"))
    except Exception as error:  # the task scores nothing in every variant; the others go on
        return task.id, f"{task.id}: {describe(error)}", time.perf_counter() - start
    return task.id, outcomes, time.perf_counter() - start


def run_variants(tasks: list[Task], networks: dict[int, Network], config: FinetuneConfig, variants: dict[str, dict],
                 workers: int, candidates: str | None = None) -> dict[int, dict[str, dict[str, TaskOutcome]]]:
    """outcomes[seed][variant][task id], every (seed, task) fine-tuned once in a pool of ``workers``.
    With ``candidates`` (a prefix), each (seed, task)'s candidates are appended to PREFIX-NAME.jsonl
    the moment its job ends, so a run stopped halfway keeps what it finished."""
    outcomes = {seed: {name: {} for name in variants} for seed in networks}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        jobs = {pool.submit(_solve_job, task, network, dataclasses.replace(config, seed=seed), variants): (seed, task)
                for seed, network in networks.items() for task in tasks}
        with progress(total=len(jobs), desc="tasks x seeds") as bar:
            for job in as_completed(jobs):
                seed, task = jobs[job]
                task_id, result, seconds = job.result()
                if isinstance(result, str):
                    write_line(f"seed {seed}: {result}")
                else:
                    for name, outcome in result.items():
                        outcomes[seed][name][task_id] = outcome
                        if candidates:
                            write_candidates(_candidate_path(candidates, name),
                                             candidate_records([task], {task_id: outcome}, seed), mode="ab")
                bar.update(1)
                bar.set_postfix(last=f"{task_id} {seconds:.0f} s")
    return outcomes


def _candidate_path(prefix: str, variant: str) -> Path:
    return Path(f"{prefix}-{variant}.jsonl")


def variant_scores(tasks: list[Task], outcomes: dict[int, dict[str, dict[str, TaskOutcome]]]) -> dict:
    """scores[variant][selector or "oracle"][seed] = each task's pass@2 (pass@K for the oracle), in
    the order of ``tasks``; a task without an outcome scores 0, so every variant covers the same tasks."""
    scores: dict = {}
    for seed, by_variant in outcomes.items():
        for name, by_task in by_variant.items():
            records = candidate_records(tasks, by_task, seed)
            scored = task_scores(records, 2)
            for selector, values in scored.items():
                by_id = dict(zip((r["task"] for r in records), values))
                scores.setdefault(name, {}).setdefault(selector, {})[seed] = [by_id.get(t.id, 0.0) for t in tasks]
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(FINETUNE_PRESETS), default="cpu")
    parser.add_argument("--dataset", choices=sorted(BUNDLED), default="arc-agi-1")
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--source", help="any task source instead (e.g. bundled:arc-agi-1/train,part=0/8)")
    parser.add_argument("--max-side", type=int, help="only tasks whose every grid fits N x N")
    parser.add_argument("--limit", type=int, help="only the first N selected tasks")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--checkpoint", default=str(SHIPPED_NETWORK), help="exported network (default: the shipped one)")
    start.add_argument("--fresh", action="store_true", help="a freshly initialised network per seed instead")
    parser.add_argument("--allow-pretrained-tasks", action="store_true",
                        help="score tasks the network was pretrained on (its held-out tasks' demonstrations)")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps per task (default 200)")
    parser.add_argument("--seeds", default="0,1", help="seeds, e.g. 0,1")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="inference changes, e.g. noise='{\"latent_noise\": 0.2}'; the first is the baseline")
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                        help="change a field of the preset for every variant (fine-tuning included)")
    parser.add_argument("--candidates", help="write each variant's candidates to PREFIX-NAME.jsonl (as each job ends)")
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variant)
        changes = dict(parse_setting(item) for group in args.set for item in group)
        config = replaced_fields(FINETUNE_PRESETS[args.preset](), {**changes, "steps": args.steps}, "the preset")
        seeds = parse_seeds(args.seeds)
        tasks = suite_tasks(args)
        checkpoint = None if args.fresh else args.checkpoint
        networks = {seed: load_network(checkpoint, seed=seed) for seed in seeds}
        if checkpoint and not args.allow_pretrained_tasks:
            refuse_pretrained_tasks(Path(checkpoint), tasks)
    except (ArcDataError, ExportError, OSError, SettingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not tasks:
        print("error: no task selected", file=sys.stderr)
        return 2
    print(f"{len(tasks)} tasks, seeds {seeds}, {args.steps} fine-tuning steps each, {len(variants)} variants: "
          + "; ".join(f"{name} {orjson.dumps(v).decode()}" for name, v in variants.items()))
    started = time.perf_counter()
    if args.candidates:
        for name in variants:
            write_candidates(_candidate_path(args.candidates, name), [])  # a new run starts new files
    outcomes = run_variants(tasks, networks, config, variants, max(1, min(args.workers, len(tasks) * len(seeds))),
                            args.candidates)
    scores = variant_scores(tasks, outcomes)
    print(paired_table(scores, (next(iter(variants)), config.selector)))
    print(f"{time.perf_counter() - started:.0f} s")
    if args.candidates:
        for name in variants:  # again, in seed and task order
            write_candidates(_candidate_path(args.candidates, name),
                             [r for seed in seeds for r in candidate_records(tasks, outcomes[seed][name], seed)])
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"variants": variants, "steps": args.steps, "seeds": seeds,
                                                  "tasks": [t.id for t in tasks], "scores": scores},
                                                 option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
