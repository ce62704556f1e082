"""Every candidate of a run with its evidence, in a file, so selectors compare offline in seconds.

    python make_submission.py ... --candidates run.jsonl       # or bench.submission --suite ... --candidates
    python -m bench.submission --selectors run.jsonl [more.jsonl ...]
    python -m bench.submission --pair base.jsonl variant.jsonl [more variants ...]   # runs, task by task

One JSON line per task: ``{"task": id, "seed": n, "test": [{"truth": grid or null, "candidates":
[evidence, ...]}, ...]}`` where each evidence is ``augment.voting.Evidence.to_dict()``: the grid,
its first appearance, its votes, the halting confidence of each vote and the log-probability every
view gives it. Ranking these with each of ``augment.voting.RANK_KEYS`` gives the pass@1 and pass@2
a run would have had with that selector, on exactly the same candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import orjson

from arc_data.tasks import Task
from augment.voting import RANK_KEYS, Evidence, grid_key, rank_evidence
from submission.finetune import TaskOutcome


SCORED = (*RANK_KEYS, "oracle")  # what a record is scored by: every selector, and any candidate right


def candidate_records(tasks: Iterable[Task], outcomes: dict[str, TaskOutcome], seed: int) -> list[dict]:
    """One record per task that kept its evidence (tasks that failed or were not reached have none)."""
    records = []
    for task in tasks:
        outcome = outcomes.get(task.id)
        if outcome is None or not outcome.evidence:
            continue
        truths = task.test_outputs if task.has_solutions else [None] * len(task.test_inputs)
        records.append({"task": task.id, "seed": seed, "test": [
            {"truth": None if truth is None else truth.tolist(), "candidates": evidence}
            for truth, evidence in zip(truths, outcome.evidence)]})
    return records


def write_candidates(path: Path, records: list[dict], mode: str = "wb") -> None:
    """One JSON line per record; ``mode="ab"`` appends to the file instead of replacing it."""
    with Path(path).open(mode) as file:
        file.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


class CandidateLog:
    """A run's candidates file, written as the run goes: each task's record is appended once the task
    reports, so a run stopped part-way keeps the candidates of the tasks it finished."""

    def __init__(self, path: Path, tasks: Iterable[Task], seed: int):
        self.path, self.seed, self.written = Path(path), seed, 0
        self.tasks = {task.id: task for task in tasks}
        write_candidates(self.path, [])  # a new run starts a new file

    def add(self, outcome: TaskOutcome) -> None:
        records = candidate_records([self.tasks[outcome.task_id]], {outcome.task_id: outcome}, self.seed)
        write_candidates(self.path, records, mode="ab")
        self.written += len(records)


def read_candidates(paths: Iterable[Path]) -> list[dict]:
    """Every record of the files; ValueError names the file and line of one that is not a record."""
    records = []
    for path in paths:
        for number, line in enumerate(Path(path).read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            record = orjson.loads(line)
            if not (isinstance(record, dict) and {"task", "seed", "test"} <= record.keys()):
                raise ValueError(f"{path}, line {number}: not a candidates record (task, seed, test)")
            records.append(record)
    return records


def selector_scores(records: list[dict]) -> dict[str, dict[str, float]]:
    """For each selector: pass@1 and pass@2 per task (the leaderboard's unit), averaged over the
    records, and the pass@K oracle (any candidate right). Records of several seeds count apart."""
    by_k = {k: task_scores(records, k) for k in (1, 2)}
    result = {name: {f"pass@{k}": _mean(by_k[k][name]) for k in (1, 2)} for name in RANK_KEYS}
    result["oracle"] = {"pass@K": _mean(by_k[2]["oracle"])}
    return result


def task_scores_by_seed(records: list[dict], k: int = 2) -> dict[str, dict[int, list[float]]]:
    """``task_scores`` of each seed's records apart: scores[selector or "oracle"][seed] = per-task
    pass@k, every selector on the same records (a paired comparison)."""
    seeds = sorted({r["seed"] for r in records})
    by_seed = {seed: task_scores([r for r in records if r["seed"] == seed], k) for seed in seeds}
    return {name: {seed: by_seed[seed][name] for seed in seeds} for name in SCORED}


def task_scores(records: list[dict], k: int) -> dict[str, list[float]]:
    """Each selector's pass@k of every record whose truths are known, in the records' order (one
    task's share of test outputs hit); "oracle": any candidate right (pass@K)."""
    scored = [record_scores(r, k) for r in records if _has_truths(r)]
    return {name: [s[name] for s in scored] for name in SCORED}


def record_scores(record: dict, k: int) -> dict[str, float]:
    """One task's pass@k under each selector and "oracle" (its truths must be known)."""
    tests = [_parsed(test) for test in record["test"]]
    scores = {name: float(np.mean([_hit(rank_evidence(evidence, name)[:k], truth) for evidence, truth in tests]))
              for name in RANK_KEYS}
    scores["oracle"] = float(np.mean([_hit(evidence, truth) for evidence, truth in tests]))
    return scores


def paired_run_scores(runs: dict[str, list[dict]], k: int = 2) -> dict[str, dict[str, dict[int, list[float]]]]:
    """Several runs of the same tasks and seeds, made comparable task by task:
    scores[run][selector or "oracle"][seed] = per-task pass@k, the tasks in the same order in every
    run. A task that one run scored and another has no record of (it failed, or the run stopped
    before it) counts 0 in the other, as it did in that run's submission; a task no run has a record
    of is left out of every mean. Raises ValueError when the runs' seeds differ or no task has known
    truths."""
    seeds = {name: sorted({r["seed"] for r in records}) for name, records in runs.items()}
    if len({tuple(s) for s in seeds.values()}) > 1:
        raise ValueError("the runs must have the same seeds to be paired: "
                         + ", ".join(f"{name} has {s}" for name, s in seeds.items()))
    by_key = {name: {(r["seed"], r["task"]): record_scores(r, k) for r in records if _has_truths(r)}
              for name, records in runs.items()}
    keys = sorted(set().union(*by_key.values()))
    if not keys:
        raise ValueError("no task with known test outputs in the runs")
    missed = dict.fromkeys(SCORED, 0.0)
    return {name: {selector: {seed: [scored.get(key, missed)[selector] for key in keys if key[0] == seed]
                              for seed in seeds[name]} for selector in SCORED}
            for name, scored in by_key.items()}


def _has_truths(record: dict) -> bool:
    return all(t["truth"] is not None for t in record["test"])


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _parsed(test: dict) -> tuple[list[Evidence], bytes]:
    """A test input's candidates and the key of its truth."""
    return [Evidence.from_dict(d) for d in test["candidates"]], grid_key(np.array(test["truth"], dtype=np.uint8))


def _hit(candidates: list[Evidence], truth: bytes) -> bool:
    return any(e.key == truth for e in candidates)


def format_selector_scores(scores: dict[str, dict[str, float]], tasks: int) -> str:
    lines = [f"{tasks} task records; pass@K (any candidate) {100 * scores['oracle']['pass@K']:.2f}%",
             "| selector | pass@1 | pass@2 |", "| --- | --- | --- |"]
    for name in RANK_KEYS:
        s = scores[name]
        lines.append(f"| {name} | {100 * s['pass@1']:.2f}% | {100 * s['pass@2']:.2f}% |")
    return "\n".join(lines)
