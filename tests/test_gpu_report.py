"""The one-command GPU report, run on the CPU at its smallest size: files written, every GPU row
unmeasured, the CPU rows measured."""

import json
import subprocess
import sys
from pathlib import Path

from pretrain.hardware import H100_PCIE, H100_SXM, L4, kaggle_hours, l4_ratios, peak_tflops_for, spec_for_name

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_report_on_a_cpu_marks_gpu_rows_unmeasured(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "bench.gpu", str(out), "--device", "cpu",
                             "--report-size", "smoke"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    unmeasured = {r["part"] for r in rows if r["status"] == "unmeasured"}
    assert {"training", "bucketing", "puzzle table", "fine-tuning", "projection"} <= unmeasured
    assert all(r["note"] == "no CUDA device" for r in rows if r["status"] == "unmeasured")
    measured = {r["part"]: r for r in rows if r["status"] == "measured"}
    assert set(measured) == {"saved for backward", "training", "fine-tuning"}, rows
    assert not [r for r in rows if r["status"] == "failed"]
    saved = [r for r in rows if r["part"] == "saved for backward"]
    plain, checkpointed = (r["data"]["bytes_per_sample"] for r in saved)
    assert 0 < checkpointed < plain
    assert measured["training"]["data"]["sample_steps_per_s"] > 0
    assert measured["fine-tuning"]["data"]["steps"] >= 1 and measured["fine-tuning"]["data"]["views"] >= 1
    markdown = (out / "report.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == len(rows) + 2  # one table: a header, its rule and one line per row
    assert markdown.count("| unmeasured |") == len(unmeasured) == 5


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
