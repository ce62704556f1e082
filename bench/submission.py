"""Seconds per task of test-time fine-tuning and inference: ``python -m bench.submission``.

Runs ``solve_task`` on the first ``--tasks`` tasks of a bundled evaluation set with a preset's
fixed number of steps and views (no time limit), and prints fine-tuning and inference seconds per
task, the peak GPU memory, and the projected time for 240 hidden tasks on Kaggle's 4x L4. The
projection scales a GPU measurement by how much slower an L4 is, by dense bf16 rate or by memory
bandwidth, whichever is larger (``pretrain.hardware.kaggle_projection``: an H100 SXM is 8.2x an L4
in rate, 11.2x in bandwidth); on a CPU it is not made.

``--suite small-arc`` runs what a user runs instead (``run_submission``: worker processes, one
deadline, time-driven fine-tuning) on a size-selected split at a fixed budget of worker-seconds per
task, and reports pass@1, pass@2 and pass@K per task and per test output, seconds per task, the
settings and the machine's load, as JSON (``--json``) and as a Markdown row for docs/BENCHMARKS.md::

    python -m bench.submission --suite small-arc --dataset arc-agi-1 --split train --max-side 8 \
        --seconds-per-task 80 --json small-arc.json [--compare-selectors] [--shard-tasks N] [--checkpoint DIR | --fresh] \
        [--set lr=1e-3 num_aug=32 model.hidden=128]

``--set KEY=VALUE`` changes one field of the preset (``FinetuneConfig``) for the run, or with a
``model.`` prefix one field of the fresh network's ``ModelConfig`` (of a checkpoint's network only
the test-time fields ``T``, ``n``, ``max_steps``, ``halt_exploration``): the tuning knobs, recorded
in the JSON's settings.

``--pair BASE.jsonl VARIANT.jsonl ...`` compares whole runs (another network, another setting) on
their candidates files (``--candidates``), task by task and seed by seed: for each selector, each
variant's pass@2 per seed, its mean, the paired difference to the base with its spread over the
seeds, and the (seed, task) pairs won and lost.

Tune on the training split; the evaluation split is for reporting.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
import torch

from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, SPLITS, load_bundled, load_source
from arc_data.tasks import Task
from bench.common import device_name, load_network, paired_table, parse_seeds, suite_tasks
from pretrain.config import SettingError, parse_setting, replaced_fields
from pretrain.distributed import default_dtype, pick_device
from pretrain.export import ExportError, refuse_pretrained_tasks
from pretrain.hardware import KAGGLE_GPUS, KAGGLE_TASKS, gpu_spec, kaggle_projection
from submission.config import FINETUNE_PRESETS, SHIPPED_NETWORK, TEST_TIME_MODEL_FIELDS, FinetuneConfig
from submission.candidates import (candidate_records, format_selector_scores, paired_run_scores, read_candidates,
                                   selector_scores, task_scores_by_seed, write_candidates)
from submission.finetune import TaskOutcome, solve_shard
from submission.network import Network
from submission.runner import STOP_MARGIN, RunSummary, run_submission
from submission.scoring import score_submission
from augment.voting import grid_key
from submission.writer import read_submission


def selector_table(tasks, outcomes) -> str:
    """pass@1 and pass@2 (per-task mean) of each selector over the same predictions."""
    lines = []
    for name in outcomes[0].ranked_by:
        scores = {k: np.mean([np.mean([grid_key(truth) in {grid_key(np.array(g, np.uint8)) for g in ranked[:k]}
                                       for truth, ranked in zip(task.test_outputs, outcome.ranked_by[name])])
                              for task, outcome in zip(tasks, outcomes)]) for k in (1, 2)}
        lines.append(f"selector {name}: pass@1 {100 * scores[1]:.1f}%  pass@2 {100 * scores[2]:.1f}%")
    return "\n".join(lines)


SUITES = ("small-arc",)


def candidate_hits(tasks: list[Task], ranked_by_task: dict[str, list], ks: tuple[int, ...]) -> dict[str, dict]:
    """Per task, per k: whether each test output's truth is among its first k ranked candidates."""
    hits = {}
    for task in tasks:
        ranked = ranked_by_task.get(task.id) or [[] for _ in task.test_outputs]
        keys = [[grid_key(np.array(g, np.uint8)) for g in r] for r in ranked]
        hits[task.id] = {k: [grid_key(truth) in keys[i][:k] for i, truth in enumerate(task.test_outputs)] for k in ks}
    return hits


def pass_rates(hits: dict[str, dict[int, list[bool]]], k: int) -> dict[str, float]:
    """pass@k as the mean of the task scores (the leaderboard's unit) and as the share of test outputs hit."""
    per_task = [float(np.mean(h[k])) for h in hits.values()]
    outputs = [hit for h in hits.values() for hit in h[k]]
    return {"per_task": float(np.mean(per_task)), "per_output": float(np.mean(outputs)),
            "task_points": float(np.sum(per_task)), "outputs_hit": int(np.sum(outputs))}


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent)
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
            "torch": torch.__version__, "commit": commit.stdout.strip() if commit.returncode == 0 else None}


def suite_result(tasks: list[Task], summary: RunSummary, submission_path: Path, settings: dict) -> dict:
    """Everything a benchmark row needs, from the finished run."""
    outcomes = summary.outcomes
    k_all = max([len(r) for o in outcomes.values() for r in o.ranked] + [2])
    ks = tuple(sorted({1, 2, k_all}))
    hits = candidate_hits(tasks, {i: o.ranked for i, o in outcomes.items()}, ks)
    score = score_submission(read_submission(submission_path), tasks)
    result = {
        "settings": settings,
        "tasks": len(tasks), "outputs": sum(len(t.test_outputs) for t in tasks),
        "pass@2_file": {"per_task": score.pass_at_2, "per_output": score.pass_at_2_per_output,
                        "task_points": score.task_points, "outputs_hit": score.hits},
        "candidates": {f"pass@{k}": pass_rates(hits, k) for k in ks}, "K": k_all,
        "wall_seconds": summary.seconds, "unfinished": summary.unfinished,
        "worker_seconds_per_task": float(np.mean([o.finetune_seconds + o.inference_seconds
                                                  for o in outcomes.values()])) if outcomes else None,
        "per_task": [_task_row(task, outcomes.get(task.id), hits[task.id], ks) for task in tasks],
    }
    if settings["compare_selectors"] and outcomes:
        names = next(iter(outcomes.values())).ranked_by
        result["selectors"] = {name: selector_rates(tasks, outcomes, name) for name in names}
    return result


def selector_rates(tasks: list[Task], outcomes: dict[str, TaskOutcome], name: str) -> dict:
    """pass@1 and pass@2 of one selector's ranking of the run's predictions."""
    hits = candidate_hits(tasks, {i: o.ranked_by.get(name) for i, o in outcomes.items()}, (1, 2))
    return {f"pass@{k}": pass_rates(hits, k) for k in (1, 2)}


def _task_row(task: Task, outcome: TaskOutcome | None, hits: dict[int, list[bool]], ks: tuple[int, ...]) -> dict:
    row = {"id": task.id, "outputs": len(task.test_outputs), "max_side": task.max_side,
           **{f"pass@{k}": hits[k] for k in ks}}
    if outcome is not None:
        row |= {"steps": outcome.finetune_steps, "views": outcome.views, "canvas": outcome.canvas,
                "finetune_seconds": outcome.finetune_seconds, "inference_seconds": outcome.inference_seconds,
                "note": outcome.note}
    return row


MARKDOWN_HEADER = ("| tasks | count | budget per task | network | preset | pass@1 | pass@2 | pass@K "
                   "| worker-s per task | load before / after |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def markdown_row(result: dict) -> str:
    """One row under ``MARKDOWN_HEADER`` for docs/BENCHMARKS.md (pass@ figures per task, the leaderboard's unit)."""
    s, c, f, k = result["settings"], result["candidates"], result["pass@2_file"], result["K"]
    cells = [s["tasks_label"], f"{result['tasks']} ({result['outputs']} outputs)",
             f"{s['seconds_per_task']:.0f} s x {s['workers']} workers", s["network"], s["preset_label"],
             f"{100 * c['pass@1']['per_task']:.2f}%",
             f"{100 * f['per_task']:.2f}% ({f['outputs_hit']} of {result['outputs']} outputs)",
             f"{100 * c[f'pass@{k}']['per_task']:.2f}% (K={k})", f"{result['worker_seconds_per_task'] or 0:.1f} s",
             f"{s['load_before'][0]:.1f} / {s['load_after'][0]:.1f}"]
    return "| " + " | ".join(cells) + " |"


def parse_settings(items: list[str]) -> tuple[dict, dict]:
    """``KEY=VALUE`` items (read by ``pretrain.config.parse_setting``) as (preset changes, model
    changes: the ``model.`` keys)."""
    preset, model = {}, {}
    for item in items:
        try:
            key, value = parse_setting(item)
        except ValueError as error:
            raise SettingError(str(error)) from None
        target, name = (model, key.removeprefix("model.")) if key.startswith("model.") else (preset, key)
        target[name] = value
    return preset, model


def suite_config(args: argparse.Namespace) -> tuple[FinetuneConfig, dict]:
    """The preset with the suite's flags and ``--set`` changes; and the model changes (``model.`` keys)."""
    preset_changes, model_changes = parse_settings([item for group in args.set for item in group])
    config = dataclasses.replace(FINETUNE_PRESETS[args.preset](), compare_selectors=args.compare_selectors,
                                 shard_tasks=max(1, args.shard_tasks))
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    config = replaced_fields(config, preset_changes, "the fine-tuning preset")
    if args.checkpoint and model_changes:
        # A trained network keeps its shapes: only the test-time fields may change.
        unknown = sorted(set(model_changes) - set(TEST_TIME_MODEL_FIELDS))
        if unknown:
            raise SettingError(f"--set: a checkpoint's network may only change model.{', model.'.join(TEST_TIME_MODEL_FIELDS)}"
                               f", got model.{', model.'.join(unknown)}")
        config = replaced_fields(config, {"model_overrides": {**config.model_overrides, **model_changes}}, "")
        model_changes = {}
    return config, model_changes


def run_suite(args: argparse.Namespace) -> int:
    """``--suite small-arc``: the whole pipeline on a size-selected split at a fixed budget per task,
    once per seed of ``--seeds`` (every random choice of a run follows its seed), so variants can be
    compared paired: the same seeds, the same tasks."""
    try:
        config, model_changes = suite_config(args)
        tasks = suite_tasks(args)
        seeds = parse_seeds(args.seeds)
        networks = {seed: load_network(args.checkpoint, model_changes, seed=seed) for seed in seeds}
        if args.checkpoint and not args.allow_pretrained_tasks:
            refuse_pretrained_tasks(Path(args.checkpoint), tasks)
    except (ArcDataError, ExportError, OSError, SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not tasks:
        print(f"error: no task fits {args.max_side} x {args.max_side}", file=sys.stderr)
        return 2
    results, records = [], []
    for seed in seeds:
        seeded = dataclasses.replace(config, seed=seed, keep_evidence=args.candidates is not None)
        result, summary = _run_seed(args, tasks, networks[seed], seeded)
        results.append(result)
        records += candidate_records(tasks, summary.outcomes, seed)
        print(format_suite(result))
    if args.candidates:
        write_candidates(Path(args.candidates), records)
    report = results[0] if len(results) == 1 else {"seeds": seeds, "runs": results, **seed_spread(results)}
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    if len(results) > 1:
        print(format_spread(report))
    return 0


def compare_runs(paths: list[str]) -> int:
    """``--pair``: one paired table per selector (the default command's first), each variant's
    selector against the base's same selector."""
    if len(paths) < 2:
        print("error: --pair: give the base run's candidates file and at least one variant's", file=sys.stderr)
        return 2
    names = [Path(p).stem for p in paths]
    names = names if len(set(names)) == len(names) else paths
    try:
        scores = paired_run_scores({name: read_candidates([path]) for name, path in zip(names, paths)})
    except (OSError, ValueError) as error:  # a missing file, a line that is not JSON, or runs that do not pair
        print(f"error: --pair: {error}", file=sys.stderr)
        return 2
    default = FINETUNE_PRESETS["cpu"]().selector
    for selector in [default, *(s for s in scores[names[0]] if s != default)]:
        print(f"\n{selector}{' (pass@K: any candidate right)' if selector == 'oracle' else ''}:")
        print(paired_table({name: {selector: scores[name][selector]} for name in names}, (names[0], selector)))
    return 0


def seed_spread(results: list[dict]) -> dict:
    """pass@2 per task of the written files over the seeds: each seed's, their mean and spread."""
    values = [r["pass@2_file"]["per_task"] for r in results]
    return {"pass@2_per_seed": values, "pass@2_mean": float(np.mean(values)),
            "pass@2_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def format_spread(report: dict) -> str:
    per_seed = ", ".join(f"seed {s}: {100 * v:.2f}%" for s, v in zip(report["seeds"], report["pass@2_per_seed"]))
    return (f"pass@2 over {len(report['seeds'])} seeds: mean {100 * report['pass@2_mean']:.2f}%, "
            f"standard deviation {100 * report['pass@2_std']:.2f} points ({per_seed})")


def _run_seed(args: argparse.Namespace, tasks: list[Task], network: Network,
              config: FinetuneConfig) -> tuple[dict, RunSummary]:
    """One run of the suite at ``config.seed``: its result and the run's summary."""
    sets = " ".join(item for group in args.set for item in group)
    workers = min(args.workers or os.cpu_count() or 1, len(tasks))
    time_limit = args.seconds_per_task * len(tasks) / workers + STOP_MARGIN
    label = args.source or f"{args.dataset} {args.split}"
    settings = {"suite": args.suite, "tasks_label": label + (f", within {args.max_side}x{args.max_side}"
                                                             if args.max_side else ""),
                "dataset": args.dataset, "split": args.split, "source": args.source, "max_side": args.max_side,
                "limit": args.limit, "seconds_per_task": args.seconds_per_task, "workers": workers,
                "time_limit": time_limit, "preset": args.preset, "finetune": config.to_dict(), "seed": config.seed,
                "preset_label": args.preset + (f", {args.steps} steps" if args.steps is not None else "")
                + (f", shards of {config.shard_tasks}" if config.shard_tasks > 1 else "") + (f", {sets}" if sets else ""),
                "network": args.checkpoint or "fresh", "model": network.config.to_dict(),
                "compare_selectors": args.compare_selectors, "load_before": os.getloadavg(), **machine()}
    print(f"{len(tasks)} tasks ({label}), seed {config.seed}, {args.seconds_per_task:.0f} worker-seconds each on "
          f"{workers} workers: time limit {time_limit:.0f} s; load average {settings['load_before'][0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(args.submission or Path(folder) / "submission.json")
        summary = run_submission(tasks, network, config, out, time_limit, workers, quiet=True)
        settings["load_after"] = os.getloadavg()
        return suite_result(tasks, summary, out, settings), summary


def format_suite(result: dict) -> str:
    lines = [f"{row['id']}: pass@2 {np.mean(row['pass@2']):.2f}, {row.get('steps', 0)} steps, "
             f"{row.get('finetune_seconds', 0):.1f} + {row.get('inference_seconds', 0):.1f} s"
             for row in result["per_task"]]
    c, f = result["candidates"], result["pass@2_file"]
    lines.append(f"pass@2 {100 * f['per_task']:.2f}% per task ({f['task_points']:.2f} of {result['tasks']}), "
                 f"{f['outputs_hit']} of {result['outputs']} outputs; "
                 + "  ".join(f"{name} {100 * v['per_task']:.2f}%" for name, v in c.items()) + " (candidates)")
    for name, scores in result.get("selectors", {}).items():
        lines.append(f"selector {name}: pass@1 {100 * scores['pass@1']['per_task']:.2f}%  "
                     f"pass@2 {100 * scores['pass@2']['per_task']:.2f}%")
    lines.append(f"{result['wall_seconds']:.0f} s wall, {len(result['unfinished'])} unfinished")
    lines += [MARKDOWN_HEADER, markdown_row(result)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submission", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(FINETUNE_PRESETS), default="cpu")
    parser.add_argument("--dataset", choices=sorted(BUNDLED), default="arc-agi-2")
    parser.add_argument("--source", help="any task source instead (e.g. synthetic:6/11/colour_map+tile)")
    parser.add_argument("--steps", type=int, help="fine-tuning steps (default: the preset's)")
    parser.add_argument("--shard-tasks", type=int, default=1,
                        help="fine-tune one network jointly on N tasks (same steps per task in total)")
    parser.add_argument("--compare-selectors", action="store_true",
                        help="rank the same predictions with every selector and report pass@1/2 for each")
    parser.add_argument("--tasks", type=int, default=5)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--checkpoint", default=str(SHIPPED_NETWORK),
                       help="exported network or official checkpoint file (default, as make_submission: the "
                            "small network shipped in submission/pretrained/small-arc)")
    start.add_argument("--fresh", action="store_true", help="a freshly initialised network instead")
    parser.add_argument("--device")
    parser.add_argument("--suite", choices=SUITES, help="run the whole pipeline on a split (see above)")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="suite: split of --dataset")
    parser.add_argument("--max-side", type=int, help="suite: only tasks whose every grid fits N x N")
    parser.add_argument("--limit", type=int, help="suite: only the first N selected tasks")
    parser.add_argument("--seconds-per-task", type=float, default=80.0, help="suite: worker-seconds per task")
    parser.add_argument("--workers", type=int, help="suite: worker processes (default one per CPU core)")
    parser.add_argument("--json", help="suite: write the result here")
    parser.add_argument("--submission", help="suite: keep the submission file here")
    parser.add_argument("--allow-pretrained-tasks", action="store_true",
                        help="suite: score a network even on tasks its pretrained_on.json lists")
    parser.add_argument("--seeds", default="0", help="suite: run once per seed, e.g. 0,1 (paired comparisons: "
                                                     "the same seeds for every variant); reports the mean and spread")
    parser.add_argument("--candidates", help="suite: write every candidate with its evidence here (JSON lines)")
    parser.add_argument("--selectors", nargs="+", metavar="FILE",
                        help="compare every selector offline on the candidates in FILE(s) (from --candidates)")
    parser.add_argument("--pair", nargs="+", metavar="FILE",
                        help="compare runs paired on their candidates files (same tasks and seeds): the first is "
                             "the base, each later file a variant")
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                        help="suite: change a field of the preset (lr=1e-3) or of the fresh network (model.hidden=128)")
    args = parser.parse_args(argv)
    if args.fresh:
        args.checkpoint = None
    if args.pair:
        return compare_runs(args.pair)
    if args.selectors:
        try:
            records = read_candidates(args.selectors)
        except (OSError, ValueError) as error:  # a missing file, or a line that is not JSON
            print(f"error: --selectors: {error}", file=sys.stderr)
            return 2
        print(format_selector_scores(selector_scores(records), len(records)))
        baseline = FINETUNE_PRESETS["cpu"]().selector  # the default command's
        print(f"\npass@2 per seed, each selector paired with {baseline} on the same candidates:")
        print(paired_table({"candidates": task_scores_by_seed(records)}, ("candidates", baseline)))
        return 0
    if args.suite:
        return run_suite(args)

    device = pick_device(args.device)
    dtype = default_dtype(device)
    try:
        network = load_network(args.checkpoint)
    except ExportError as error:
        parser.exit(2, f"error: {error}\n")
    config = dataclasses.replace(FINETUNE_PRESETS[args.preset](), max_task_seconds=float("inf"),
                                 compare_selectors=args.compare_selectors)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if config.steps is None:
        parser.error(f"preset {args.preset} fine-tunes for a time share; give --steps (or use --suite)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = []
    tasks = load_source(args.source) if args.source else load_bundled(args.dataset, "eval")
    chosen = tasks[:args.tasks]
    for first in range(0, len(chosen), args.shard_tasks):
        shard = chosen[first:first + args.shard_tasks]
        for task, outcome in zip(shard, solve_shard(shard, network, config, device, float("inf"), dtype)):
            rows.append(outcome)
            print(f"{task.id}: canvas {outcome.canvas}, {outcome.finetune_steps} steps in "
                  f"{outcome.finetune_seconds:.1f} s (shard of {len(shard)}), {outcome.views} views in "
                  f"{outcome.inference_seconds:.1f} s")
    # A shard's fine-tuning is shared by its tasks: count it once per shard.
    finetune = float(np.sum([o.finetune_seconds for o in rows[::args.shard_tasks]])) / len(rows)
    inference = float(np.mean([o.inference_seconds for o in rows]))
    print(f"\n{device_name(device)}, {dtype}, preset {args.preset}: per task {finetune:.1f} s fine-tuning "
          f"({config.steps} steps, batch {config.batch}) + {inference:.1f} s inference ({config.views} views)")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if args.compare_selectors:
        print(selector_table(chosen, rows))
    spec = gpu_spec(device)
    if spec:
        p = kaggle_projection(spec, finetune + inference)
        print(f"projected on Kaggle: {KAGGLE_TASKS} tasks on {KAGGLE_GPUS}x L4 ~ {p['hours']:.1f} h "
              f"(this GPU's time x {p['used']:.1f}: an L4 is {p['compute']:.1f}x slower in bf16 rate, "
              f"{p['bandwidth']:.1f}x in bandwidth, the larger is used)")
    else:
        print("projected on Kaggle: not made (needs a measurement on a known GPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
