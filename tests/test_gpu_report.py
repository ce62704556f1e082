"""The one-command GPU check (``python -m bench.gpu``) on the CPU: every row on disk the moment it
is made, GPU rows unmeasured, rows that do not fit the budget skipped, and the run over in time."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from bench import gpu
from pretrain.distributed import World
from pretrain.hardware import (H100_PCIE, H100_SXM, L4, kaggle_hours, kaggle_projection, l4_ratios, peak_tflops_for,
                               spec_for_name)
from submission.config import kaggle_nvarc
from submission.finetune import TaskOutcome, solve_shard
from tests.helpers import run_cli, start_cli

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
# The GPU rows a CPU lists as unmeasured: the paper network, the scored shard and its projection, the extras.
GPU_ROWS = 1 + 2 + len(gpu.EXTRAS) + 1
ALLOWED = {gpu.MEASURED, gpu.NO_GPU, gpu.OUT_OF_TIME, gpu.STOPPED}


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]


def table_lines(out: Path) -> list[str]:
    return [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ")]


def by_status(rows: list[dict], status: str) -> list[dict]:
    return [r for r in rows if r["status"] == status]


def check_in_process(out: Path, minutes: float) -> tuple[list[dict], float]:
    """The check run here (no watchdog: it would end pytest), its budget counted from now; the rows
    and the seconds it took."""
    start = time.perf_counter()
    rows = gpu.run_check(out, CPU, minutes=minutes, started=start, watchdog=False)
    return rows, time.perf_counter() - start


def test_each_row_is_in_both_files_as_soon_as_it_is_added(tmp_path):
    report = gpu.Report(tmp_path, "test")
    assert read_rows(tmp_path) == [] and len(table_lines(tmp_path)) == 2
    for k in range(3):
        report.add("section", f"row {k}", gpu.MEASURED, "a | result", value=k)
        rows = read_rows(tmp_path)
        assert [r["data"]["value"] for r in rows] == list(range(k + 1))
        assert len(table_lines(tmp_path)) == k + 1 + 2 and "a / result" in table_lines(tmp_path)[-1]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.usefixtures("one_thread")
def test_a_budget_for_the_first_section_only_skips_the_rest(tmp_path):
    # 6 s: the environment (1 s) fits, the CPU's training row (15 s) and the scored path (20 s) do not.
    rows, _ = check_in_process(tmp_path, 0.1)
    assert [r["section"] for r in by_status(rows, gpu.MEASURED)] == ["environment"]
    skipped = by_status(rows, gpu.OUT_OF_TIME)
    assert [r["section"] for r in skipped] == ["paper network", "scored path"]
    assert all("needs about" in r["note"] for r in skipped)
    assert len(by_status(rows, gpu.NO_GPU)) == GPU_ROWS and len(rows) == 1 + 2 + GPU_ROWS
    assert read_rows(tmp_path) == rows
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.count(f"| {gpu.OUT_OF_TIME} |") == 2 and markdown.count(f"| {gpu.NO_GPU} |") == GPU_ROWS


@pytest.mark.usefixtures("one_thread")
def test_a_cpu_run_keeps_to_its_minutes_and_marks_gpu_rows_unmeasured(tmp_path):
    rows, seconds = check_in_process(tmp_path, 0.5)
    assert seconds < 0.5 * 60 + 30, f"took {seconds:.0f} s"
    assert {r["status"] for r in rows} <= ALLOWED - {gpu.STOPPED}, rows
    assert rows[0]["section"] == "environment" and rows[0]["status"] == gpu.MEASURED
    assert len(by_status(rows, gpu.NO_GPU)) == GPU_ROWS
    assert read_rows(tmp_path) == rows and len(table_lines(tmp_path)) == len(rows) + 2
    training = [r for r in by_status(rows, gpu.MEASURED) if r["section"] == "paper network"]
    assert all(r["data"]["sample_steps_per_s"] > 0 and r["data"]["mfu"] is None for r in training)


@pytest.mark.usefixtures("one_thread")
def test_the_scored_path_runs_reduced_on_a_cpu(tmp_path, monkeypatch):
    """The same code as on a GPU: a joint shard of two real tasks at the kaggle-nvarc preset, reduced,
    whose deadline a compile warm-up may not push past the check's end."""
    check = gpu.Check(gpu.Report(tmp_path, "test"), CPU, time.perf_counter() + 600, tasks=2)
    latest_ends = []

    def solve_recording_its_latest_end(*args, **options):
        latest_ends.append(options.get("latest_end", float("inf")))
        return solve_shard(*args, **options)

    monkeypatch.setattr(gpu, "solve_shard", solve_recording_its_latest_end)
    gpu.run_section(check, "scored path", gpu.scored_path)
    assert latest_ends and all(end <= check.end for end in latest_ends)
    rows = read_rows(tmp_path)
    assert [r["status"] for r in rows] == [gpu.NO_GPU, gpu.NO_GPU, gpu.MEASURED], rows
    data = rows[-1]["data"]
    assert len(data["tasks"]) == 2 and not data["failed"]
    assert data["steps"] == 2 * 2 and data["views"] == [2, 2] and data["warmup_seconds"] == 0.0
    assert data["finetune_seconds"] > 0 and data["inference_seconds"] > 0 and data["seconds_per_task_full"] > 0


def test_the_shard_row_counts_shared_seconds_once_and_scales_to_the_preset():
    config = kaggle_nvarc()  # 375 steps and 128 views per task
    outcomes = [TaskOutcome(task_id, [], finetune_steps=50, views=64, finetune_seconds=10.0, inference_seconds=s)
                for task_id, s in (("a", 2.0), ("b", 4.0))]
    for outcome in outcomes:
        outcome.warmup_seconds = 30.0  # the shard's one compile, on each of its outcomes
    scored = gpu.Scored(network=None, network_label="", tasks=[], config=config, label="")
    row = gpu.shard_row(scored, outcomes, warmup_s=5.0)
    assert row["finetune_seconds"] == 10.0 and row["inference_seconds"] == 6.0
    assert row["warmup_seconds"] == 35.0
    # 0.2 s per step x 375, and (2/64 + 4/64) / 2 s per view x 128
    assert row["seconds_per_task_full"] == pytest.approx(0.2 * 375 + 3.0 / 64 * 128)


@pytest.mark.cli
def test_the_command_ends_within_its_minutes(tmp_path):
    start = time.perf_counter()
    result = run_cli(["-m", "bench.gpu", tmp_path, "--device", "cpu", "--minutes", "0.5"], timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode in (0, gpu.STOPPED_EXIT), result.stderr[-3000:]
    assert seconds < 0.5 * 60 + 30, f"took {seconds:.0f} s"
    rows = read_rows(tmp_path)
    assert {r["status"] for r in rows} <= ALLOWED and len(by_status(rows, gpu.NO_GPU)) == GPU_ROWS


@pytest.mark.cli
def test_a_killed_command_leaves_what_it_measured(tmp_path):
    """Killed once its first row is in the markdown, the run leaves whole files with that row."""
    process = start_cli(["-m", "bench.gpu", tmp_path, "--device", "cpu", "--minutes", "1"])
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if (tmp_path / "report.md").exists() and len(table_lines(tmp_path)) > 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    rows = read_rows(tmp_path)
    assert rows and rows[0]["section"] == "environment" and rows[0]["status"] == gpu.MEASURED
    assert len(rows) < GPU_ROWS  # it was stopped early
    # The markdown follows the JSON line: a kill between the two leaves it one row behind, never broken.
    assert len(table_lines(tmp_path)) - 2 in (len(rows), len(rows) - 1)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_hardware_figures_tell_pcie_from_sxm():
    assert spec_for_name("NVIDIA H100 80GB HBM3") == H100_SXM
    assert spec_for_name("NVIDIA H100 PCIe") == H100_PCIE
    assert spec_for_name("NVIDIA H100", multiprocessors=114) == H100_PCIE  # a name that does not say
    assert spec_for_name("NVIDIA H100", multiprocessors=132) == H100_SXM
    assert spec_for_name("NVIDIA L4") == L4 and spec_for_name("NVIDIA L40S") is None
    assert peak_tflops_for("NVIDIA H200") == 989 and peak_tflops_for("Tesla T4") is None
    sxm, pcie = l4_ratios(H100_SXM), l4_ratios(H100_PCIE)
    assert round(sxm["compute"], 1) == 8.2 and round(sxm["bandwidth"], 1) == 11.2 and sxm["used"] == sxm["bandwidth"]
    assert round(pcie["bandwidth"], 1) == 6.7 and pcie["used"] == pcie["bandwidth"]
    # 60 s per task on an H100 SXM: 240 tasks over 4 L4s, each 11.2x slower
    assert kaggle_hours(60.0, sxm["used"]) == 60.0 * sxm["used"] * 60 / 3600
    projection = kaggle_projection(H100_SXM, 60.0)
    assert projection["hours"] == kaggle_hours(60.0, sxm["used"]) and projection["used"] == sxm["used"]
