"""Seeds decide a run; the candidates file keeps every candidate's evidence; selectors rank it offline
exactly as the run ranked it."""

import dataclasses

import numpy as np
import pytest
import torch

import make_submission
from arc_data.synthetic import synthetic_tasks
from augment.voting import RANK_KEYS, Evidence, rank_evidence
from submission.candidates import (candidate_records, read_candidates, selector_scores, task_scores_by_seed,
                                   write_candidates)
from submission.config import cpu, fresh_model_config
from submission.finetune import Network, solve_task

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**changes):
    return dataclasses.replace(cpu(), **{**dict(num_aug=8, views=8, steps=4, batch=4, inference_batch=8), **changes})


def evidence(grid, votes, confidences, log_probs, first_seen):
    return {"grid": grid, "votes": votes, "first_seen": first_seen, "confidences": confidences,
            "view_log_probs": log_probs}


def test_the_seed_decides_the_run():
    task = synthetic_tasks(1, seed=31)[0]
    network = Network.fresh_init(fresh_model_config())
    runs = {seed: solve_task(task, network, tiny_config(seed=seed, keep_evidence=True), CPU, float("inf"))
            for seed in (0, 0, 1)}
    again = solve_task(task, network, tiny_config(seed=0, keep_evidence=True), CPU, float("inf"))
    assert again.evidence == runs[0].evidence and again.ranked == runs[0].ranked
    assert runs[1].evidence != runs[0].evidence  # other augmentations, views and samples


def test_the_evidence_ranks_offline_as_the_run_ranked_it():
    task = synthetic_tasks(1, seed=32)[0]
    network = Network.fresh_init(fresh_model_config())
    outcome = solve_task(task, network, tiny_config(keep_evidence=True, compare_selectors=True), CPU, float("inf"))
    assert set(outcome.ranked_by) == set(RANK_KEYS)
    for name, ranked in outcome.ranked_by.items():
        offline = [[e.grid.tolist() for e in rank_evidence([Evidence.from_dict(d) for d in test], name)]
                   for test in outcome.evidence]
        assert offline == ranked, name
    test = outcome.evidence[0]
    assert sum(d["votes"] for d in test) == outcome.views  # every view voted once for its test input
    assert all(len(d["view_log_probs"]) == outcome.views for d in test)


def test_selector_scores_count_the_truth_where_each_selector_ranks_it():
    """Three candidates: A has the most votes, B the best product of experts, C the best confidence.
    The truth is B: poe ranks it first, vote second, confidence third."""
    a, b, c = [[1]], [[2]], [[3]]
    test = {"truth": b, "candidates": [
        evidence(a, 3, [0.3, 0.3, 0.3], [-5.0, -5.0], 0),
        evidence(b, 2, [0.2, 0.2], [-1.0, -1.0], 1),
        evidence(c, 1, [0.9], [-9.0, -9.0], 2)]}
    scores = selector_scores([{"task": "t", "seed": 0, "test": [test]}])
    assert scores["poe"] == {"pass@1": 1.0, "pass@2": 1.0}
    assert scores["vote"] == {"pass@1": 0.0, "pass@2": 1.0}
    assert scores["confidence"] == {"pass@1": 0.0, "pass@2": 0.0}
    assert scores["oracle"] == {"pass@K": 1.0}


def test_selectors_are_compared_per_seed_and_paired_on_the_same_candidates(tmp_path, capsys):
    """Candidate T has the fewest votes and the best product of experts: when it is the truth, poe
    scores and vote does not (seed 0, both tasks); when the most voted is the truth, both score."""
    a, b, t = [[1]], [[2]], [[3]]
    candidates = [evidence(a, 3, [0.3] * 3, [-5.0, -5.0], 0), evidence(b, 2, [0.2] * 2, [-6.0, -6.0], 1),
                  evidence(t, 1, [0.1], [-1.0, -1.0], 2)]
    records = [{"task": name, "seed": seed, "test": [{"truth": truth, "candidates": candidates}]}
               for seed, truth in ((0, t), (1, a)) for name in ("x", "y")]
    scores = task_scores_by_seed(records)
    assert scores["vote"] == {0: [0.0, 0.0], 1: [1.0, 1.0]} and scores["poe"] == {0: [1.0, 1.0], 1: [1.0, 1.0]}
    write_candidates(tmp_path / "c.jsonl", records)
    import bench.submission
    assert bench.submission.main(["--selectors", str(tmp_path / "c.jsonl")]) == 0
    poe_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| candidates | poe |"))
    assert poe_row.endswith("| 100.00% | 100.00% | 100.00% | +50.00 +- 70.71 | 2 / 0 |")


def test_make_submission_writes_the_candidates_of_every_task(tmp_path, capsys):
    out, candidates = tmp_path / "submission.json", tmp_path / "candidates.jsonl"
    code = make_submission.main(["--dataset", "arc-agi-1", "--split", "eval", "--max-side", "4", "--limit", "2",
                                 "--fresh", "--steps", "2", "--workers", "1", "--seed", "3", "--time-limit", "120",
                                 "--out", str(out), "--candidates", str(candidates), "--quiet"])
    assert code == 0, capsys.readouterr().err
    records = read_candidates([candidates])
    assert len(records) == 2 and all(r["seed"] == 3 for r in records)
    for record in records:
        assert record["test"] and all(t["truth"] is not None and t["candidates"] for t in record["test"])
    assert set(selector_scores(records)) == set(RANK_KEYS) | {"oracle"}


def test_candidate_records_skip_tasks_without_evidence(tmp_path):
    tasks = synthetic_tasks(2, seed=33)
    records = candidate_records(tasks, {}, seed=0)
    write_candidates(tmp_path / "empty.jsonl", records)
    assert records == [] and read_candidates([tmp_path / "empty.jsonl"]) == []
    assert np.isfinite(selector_scores([])["vote"]["pass@2"])


def test_a_missing_or_broken_candidates_file_is_one_line(tmp_path, capsys):
    import bench.submission
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    for path in (tmp_path / "missing.jsonl", broken):
        assert bench.submission.main(["--selectors", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --selectors:") and err.count("\n") == 1


def test_runs_are_paired_task_by_task_and_a_missing_task_counts_zero(tmp_path, capsys):
    """The variant solves x where the base does not (seed 0), and has no record of y at seed 1,
    which the base solved: one pair won, one lost, the same mean."""
    right, wrong = [[1]], [[2]]

    def record(task, seed, answer):
        return {"task": task, "seed": seed, "test": [{"truth": right, "candidates": [
            evidence(answer, 2, [0.5] * 2, [-1.0], 0)]}]}

    base = [record("x", 0, wrong), record("y", 0, right), record("x", 1, wrong), record("y", 1, right)]
    variant = [record("x", 0, right), record("y", 0, right), record("x", 1, wrong)]
    write_candidates(tmp_path / "base.jsonl", base)
    write_candidates(tmp_path / "variant.jsonl", variant)
    import bench.submission
    assert bench.submission.main(["--pair", str(tmp_path / "base.jsonl"), str(tmp_path / "variant.jsonl")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "vote-poe:"  # the default command's selector comes first
    rows = [line for line in out.splitlines() if line.startswith("| variant | vote |")]
    assert rows == ["| variant | vote | 100.00% | 0.00% | 50.00% | +0.00 +- 70.71 | 1 / 1 |"]


def test_runs_with_other_seeds_do_not_pair(tmp_path, capsys):
    record = {"task": "x", "test": [{"truth": [[1]], "candidates": [evidence([[1]], 1, [0.5], [-1.0], 0)]}]}
    write_candidates(tmp_path / "a.jsonl", [{**record, "seed": 0}])
    write_candidates(tmp_path / "b.jsonl", [{**record, "seed": 1}])
    import bench.submission
    (tmp_path / "other.jsonl").write_text('{"id": "x"}\n')  # valid JSON, not a record
    for files in ([tmp_path / "a.jsonl"], [tmp_path / "a.jsonl", tmp_path / "b.jsonl"],
                  [tmp_path / "a.jsonl", tmp_path / "missing.jsonl"], [tmp_path / "a.jsonl", tmp_path / "other.jsonl"]):
        assert bench.submission.main(["--pair", *map(str, files)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --pair:") and err.count("\n") == 1
