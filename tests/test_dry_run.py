"""The device dry run (bench/dry_run.py) on the tiny preset: no host tensor in device math and no host
sync beyond the intended ones; and a host tensor or an unlisted sync, injected, fails the run with
the line that made it."""

import torch

import pretrain.learner
from bench.dry_run import KNOWN_MISMATCHES, Location, Place, dry_run, main
from pretrain.model import halt_decision


def test_the_tiny_dry_run_finds_nothing_new(one_thread):
    report = dry_run("tiny")
    text = "\n".join(report.lines)
    assert report.mismatches == [] and report.unexpected_syncs == [], text
    assert report.exit_status == 0
    assert report.lines[-1].startswith("device dry run: 0 mismatches, 0 unexpected host syncs, peak ")
    # The checks do see what they look for: the intended syncs, and the known mismatches until fixed.
    seen = {where.place for where, _ in report.findings.syncs}
    assert {Place("pretrain/learner.py", "refill"), Place("pretrain/puzzle_embedding.py", "sum_rows"),
            Place("pretrain/evaluation.py", "predict")} <= seen, text
    assert all(k.place.path in text for k in KNOWN_MISMATCHES)
    assert set(report.peaks) == {"train", "fine-tune", "predict"} and min(report.peaks.values()) > 0


def _halt_with_host_tensor(q_logits, *args, **kwargs):
    q_logits = q_logits + torch.ones(q_logits.shape)  # a host tensor in device math
    if q_logits.sum().item() > 1e9:  # a host sync nobody listed
        pass
    return halt_decision(q_logits, *args, **kwargs)


def test_a_host_tensor_and_an_unlisted_sync_fail_the_run_with_their_lines(monkeypatch, capsys, one_thread):
    monkeypatch.setattr(pretrain.learner, "halt_decision", _halt_with_host_tensor)
    status = main(["--preset", "tiny"])
    out = capsys.readouterr().out
    first = _halt_with_host_tensor.__code__.co_firstlineno
    mismatch = Location("tests/test_dry_run.py", first + 1, "_halt_with_host_tensor")
    sync = Location("tests/test_dry_run.py", first + 2, "_halt_with_host_tensor")
    assert status == 1
    assert f"mismatch: {mismatch}: aten.add takes host tensor(s)" in out, out
    assert f"host sync: {sync}: aten._local_scalar_dense" in out and "UNEXPECTED" in out, out
    assert out.splitlines()[-1].startswith("device dry run: 1 mismatches, 1 unexpected host syncs, peak "), out
