"""Everything a GPU session should measure, in one command: ``python -m bench.gpu DIR``.

Writes ``DIR/report.json`` (every row with its numbers) and ``DIR/report.md`` (one table), rewritten
after every row so a session cut short keeps what it measured. Parts, each well under 10 minutes
on an H100 at size "full" (about 25 minutes in all):

1. training at the paper preset (trm-arc1, global batch 768 in micro-batches that fit, chosen by
   ``pretrain.memory``), canvas 30, eager and compiled: sample-steps/s, MFU, peak memory;
2. training with canvas bucketing (rope2d, canvases 8..30), eager and compiled, per canvas and
   weighted by ARC-AGI-1's training pairs per canvas (as ``--bucket-canvas`` draws its steps);
3. bytes saved for backward per sample, per canvas (device-independent; ``pretrain.memory``);
4. the puzzle table's bytes on the device for ARC-AGI-1's ids, device against host storage;
5. test-time fine-tuning and inference through ``submission.finetune.solve_task`` at a submission
   preset (``kaggle-4xl4`` by default) on real ARC-AGI-2 evaluation tasks, with a paper-size network
   (fresh weights: time does not depend on them); compilation happens in an untimed warm-up per canvas;
6. the projection to Kaggle's 240 hidden tasks on 4 L4s (``pretrain.hardware.kaggle_projection``).

Without CUDA the same command measures what a CPU can, at reduced size (bytes per sample of the
paper network in bf16, tiny-preset training, one task of fine-tuning at the ``cpu`` preset), and
lists every GPU row as ``unmeasured``. Each part keeps to a time budget: what does not fit is
listed as ``skipped``. A part that fails is listed as ``failed`` with its error, and the others run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from arc_data.sources import load_bundled
from bench.common import device_name
from bench.train import bench_one
from pretrain.config import MODEL_PRESETS, trm_arc2
from pretrain.data import CANVAS_BUCKETS, PuzzleCatalogue
from pretrain.distributed import World, default_dtype
from pretrain.hardware import KAGGLE_GPUS, KAGGLE_TASKS, gpu_spec, kaggle_hours, l4_ratios
from pretrain.memory import measure_bytes_per_sample
from pretrain.model import build_model
from pretrain.presets import ARC1, PRESETS
from pretrain.puzzle_embedding import PuzzleEmbedding

# The throughput targets on one H100 at the paper preset.
TARGET_CANVAS_30 = 800.0  # sample-steps/s, compiled, canvas 30 (2x the reference's ~384)
TARGET_CANVAS_16_FACTOR = 3.0  # canvas 16 with bucketing: at least 3x the canvas-30 target


@dataclass(frozen=True)
class Size:
    train_steps: int  # timed training steps per configuration
    train_warmup: int  # untimed steps first (compilation included)
    bucket_canvases: tuple[int, ...]
    finetune_tasks: int  # real ARC-AGI-2 tasks solved at the fine-tuning preset
    part_budget_s: float  # a part stops adding configurations past this many seconds
    bytes_model: str  # network whose saved bytes per sample are counted
    bytes_canvases: tuple[int, ...]
    cpu_train_steps: int
    cpu_finetune_steps: int | None  # None: the cpu preset's


SIZES = {
    "full": Size(5, 2, CANVAS_BUCKETS, 3, 480.0, "trm_arc1", CANVAS_BUCKETS, 10, None),
    "reduced": Size(3, 1, CANVAS_BUCKETS, 2, 240.0, "trm_arc1", (8,), 5, None),
    "smoke": Size(1, 0, (8, 12), 1, 60.0, "tiny", (8,), 1, 2),
}


@dataclass
class Report:
    out_dir: Path
    world: World
    size_name: str
    rows: list[dict] = dataclasses.field(default_factory=list)

    def add(self, part: str, name: str, status: str, result: str = "", note: str = "", **data) -> dict:
        row = {"part": part, "name": name, "status": status, "result": result, "note": note, "data": data}
        self.rows.append(row)
        print(f"[{part}] {name}: {status} {result} {note}".rstrip(), file=sys.stderr, flush=True)
        self.write()
        return row

    def write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        device = self.world.device
        spec = gpu_spec(device)
        header = {"device": device_name(device), "gpu_spec": dataclasses.asdict(spec) if spec else None,
                  "torch": torch.__version__, "cuda": torch.version.cuda, "size": self.size_name,
                  "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                  "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
        _write_atomic(self.out_dir / "report.json", json.dumps({**header, "rows": self.rows}, indent=2) + "\n")
        _write_atomic(self.out_dir / "report.md", markdown(header, self.rows))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def markdown(header: dict, rows: list[dict]) -> str:
    lines = [f"# GPU report: {header['device']}", "",
             f"torch {header['torch']}, CUDA {header['cuda']}, size `{header['size']}`, "
             f"1-minute load average {header['load_average_1m']}. Written by "
             "`python -m bench.gpu DIR`; numbers in `report.json`.", "",
             "| part | configuration | status | result | note |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [row["part"], row["name"], row["status"], row["result"], row["note"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _part(report: Report, part: str, run: Callable[[], None]) -> None:
    """Run one part; a failure is recorded as a row (with its error) and the report goes on."""
    try:
        run()
    except Exception as error:  # recorded in the report and printed, not swallowed
        traceback.print_exc()
        report.add(part, "(part)", "failed", note=f"{type(error).__name__}: {error}")
    finally:
        if report.world.device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Rows


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _training_result(row: dict) -> str:
    mfu = f", MFU {100 * row['mfu']:.1f}%" if row["mfu"] is not None else ""
    return (f"{row['sample_steps_per_s']:,.1f} sample-steps/s{mfu}, peak {_gib(row['peak_memory_bytes'])}, "
            f"micro-batch {row['micro_batch']} of {row['batch']}, warm-up {row['warmup_s']:.0f} s")


def arc1_catalogue() -> PuzzleCatalogue:
    """ARC-AGI-1's training data as the paper presets use it, bucketed (ids and pairs per canvas)."""
    return PuzzleCatalogue.from_config(dataclasses.replace(ARC1, bucket_canvas=True))


def training_rows(report: Report, size: Size, catalogue: PuzzleCatalogue) -> None:
    """Parts 1 and 2 (GPU): the paper preset at canvas 30 and bucketed, eager and compiled."""
    world, dtype = report.world, default_dtype(report.world.device)
    spec = gpu_spec(world.device)
    peak = spec.bf16_tflops if spec else None
    run = PRESETS["trm-arc1"]()
    batch = run.optim.global_batch
    for compiled in (False, True):
        mode = "compiled" if compiled else "eager"

        def canvas_30(compiled=compiled, mode=mode):
            row = bench_one(run, run.model, 30, batch, compile=compiled, steps=size.train_steps,
                            warmup=size.train_warmup, world=world, dtype=dtype, puzzle_ids=catalogue.num_ids,
                            peak_tflops=peak)
            note = ""
            if compiled:
                note = f"target >= {TARGET_CANVAS_30:.0f}: {'met' if row['sample_steps_per_s'] >= TARGET_CANVAS_30 else 'not met'}"
            report.add("training", f"trm-arc1, canvas 30, rope1d, {mode}", "measured", _training_result(row), note,
                       **row)

        _part(report, "training", canvas_30)
    pairs = {c: sum(len(g.pair_inputs) for g in catalogue.groups if g.canvas == c) for c in catalogue.canvases()}
    config = run.model.replace(pos_encoding="rope2d")
    for compiled in (False, True):
        mode = "compiled" if compiled else "eager"
        rates: dict[int, float] = {}

        def bucketed(compiled=compiled, mode=mode, rates=rates):
            start = time.perf_counter()
            for canvas in size.bucket_canvases:
                name = f"trm-arc1, canvas {canvas}, rope2d, {mode}"
                if time.perf_counter() - start > size.part_budget_s:
                    report.add("bucketing", name, "skipped", note=f"past the part's {size.part_budget_s:.0f} s budget")
                    continue
                row = bench_one(run, config, canvas, batch, compile=compiled, steps=size.train_steps,
                                warmup=size.train_warmup, world=world, dtype=dtype, puzzle_ids=catalogue.num_ids,
                                peak_tflops=peak)
                rates[canvas] = row["sample_steps_per_s"]
                note = ""
                if compiled and canvas == 16:
                    goal = TARGET_CANVAS_16_FACTOR * TARGET_CANVAS_30
                    note = f"target >= {goal:.0f}: {'met' if rates[canvas] >= goal else 'not met'}"
                report.add("bucketing", name, "measured", _training_result(row), note, **row)
            weights = {c: pairs.get(c, 0) for c in rates}
            if sum(weights.values()):
                total = sum(weights.values())
                mixed = total / sum(w / rates[c] for c, w in weights.items())  # time-weighted over the steps
                report.add("bucketing", f"ARC-AGI-1 mix of canvases {sorted(rates)}, {mode}", "measured",
                           f"{mixed:,.1f} sample-steps/s", "steps drawn in proportion to training pairs per canvas",
                           sample_steps_per_s=mixed, pair_shares={c: w / total for c, w in weights.items()})

        _part(report, "bucketing", bucketed)


def saved_bytes_rows(report: Report, size: Size) -> None:
    """Part 3 (any device): bytes saved for backward per sample of one supervision step, bf16."""
    def run():
        config = MODEL_PRESETS[size.bytes_model]().replace(pos_encoding="rope2d", T=1)
        device = report.world.device
        for checkpointing in (False, True):
            for canvas in size.bytes_canvases if not checkpointing else size.bytes_canvases[:1]:
                model = build_model(config.replace(canvas=max(canvas, config.canvas)), dtype=torch.bfloat16,
                                    device=device)
                model.activation_checkpointing = checkpointing
                cost = measure_bytes_per_sample(model, canvas, "saved_tensors", samples=(1, 2))
                name = (f"{size.bytes_model}, bf16, canvas {canvas}"
                        + (", activation checkpointing" if checkpointing else ""))
                report.add("saved for backward", name, "measured", f"{cost.per_sample / 2**20:.2f} MiB per sample",
                           "the last cycle only (T=1): the first T-1 save nothing", bytes_per_sample=cost.per_sample,
                           fixed_bytes=cost.fixed, canvas=canvas, activation_checkpointing=checkpointing)
    _part(report, "saved for backward", run)


def puzzle_table_rows(report: Report, catalogue: PuzzleCatalogue) -> None:
    """Part 4 (GPU): bytes the ARC-AGI-1 table takes on the device, device against host storage."""
    def run():
        device = report.world.device
        for storage in ("device", "host"):
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            table = PuzzleEmbedding(catalogue.num_ids, 512, device, storage)
            resident = torch.cuda.memory_allocated(device) - before
            torch.cuda.reset_peak_memory_stats(device)
            ids = torch.randint(0, catalogue.num_ids, (768,), device=device)
            table.lookup(ids).sum().backward()
            table.step(1e-2, 0.1)
            torch.cuda.synchronize(device)
            transient = torch.cuda.max_memory_allocated(device) - before - resident
            report.add("puzzle table", f"{catalogue.num_ids:,} ids x 512, {storage} storage", "measured",
                       f"{_gib(resident)} resident on the device, {transient / 2**20:.1f} MiB more during a step of 768",
                       resident_bytes=resident, step_bytes=transient)
            del table
    _part(report, "puzzle table", run)


def finetune_rows(report: Report, size: Size, preset: str, on_gpu: bool) -> None:
    """Parts 5 and 6: seconds per task of test-time fine-tuning and inference, and the projection."""
    from submission.config import PRESETS as FINETUNE_PRESETS, fresh_model_config
    from submission.finetune import Network, solve_task, task_canvas
    from submission.runner import task_size

    device, dtype = report.world.device, default_dtype(report.world.device)
    if on_gpu:
        config = FINETUNE_PRESETS[preset]()
        network = Network.fresh_init(trm_arc2().replace(pos_encoding="rope2d"))
        count, label = size.finetune_tasks, f"{preset}, paper-size network"
    else:
        preset = "cpu"
        config = FINETUNE_PRESETS["cpu"]()
        if size.cpu_finetune_steps is not None:
            config = dataclasses.replace(config, steps=size.cpu_finetune_steps, embedding_steps=1, views=2)
        network = Network.fresh_init(fresh_model_config())
        count, label = 1, "cpu preset, the fresh CPU network"
    tasks = load_bundled("arc-agi-2", "eval")
    # A GPU times the first tasks of the file (no choice by size); a CPU the smallest, to stay short.
    tasks = tasks[:count] if on_gpu else sorted(tasks, key=task_size)[:count]
    timed: list[float] = []

    def run():
        if on_gpu:  # compile each canvas's graphs in an untimed warm-up with the same shapes
            warm = dataclasses.replace(config, steps=2, embedding_steps=1, views=1)
            firsts = {task_canvas(task, network, config): task for task in tasks}
            for task in firsts.values():
                solve_task(task, network, warm, device, float("inf"), dtype)
        start = time.perf_counter()
        for task in tasks:
            if time.perf_counter() - start > size.part_budget_s:
                report.add("fine-tuning", f"{label}, task {task.id}", "skipped", note="past the part's time budget")
                continue
            if on_gpu:
                torch.cuda.reset_peak_memory_stats(device)
            outcome = solve_task(task, network, config, device, float("inf"), dtype)
            peak = torch.cuda.max_memory_allocated(device) if on_gpu else None
            seconds = outcome.finetune_seconds + outcome.inference_seconds
            timed.append(seconds)
            peak_text = f", peak {_gib(peak)}" if peak is not None else ""
            report.add("fine-tuning", f"{label}, task {task.id} (canvas {outcome.canvas})", "measured",
                       f"{outcome.finetune_seconds:.1f} s fine-tuning ({outcome.finetune_steps} steps of "
                       f"{config.batch}) + {outcome.inference_seconds:.1f} s inference ({outcome.views} views){peak_text}",
                       outcome.note if outcome.note != "ok" else "", finetune_seconds=outcome.finetune_seconds,
                       inference_seconds=outcome.inference_seconds, steps=outcome.finetune_steps, views=outcome.views,
                       canvas=outcome.canvas, peak_memory_bytes=peak, preset=preset)

    _part(report, "fine-tuning", run)
    if not on_gpu:
        return
    spec = gpu_spec(device)
    if not timed or spec is None:
        report.add("projection", f"{KAGGLE_TASKS} tasks on {KAGGLE_GPUS}x L4", "unmeasured",
                   note="needs timed tasks on a GPU of known bf16 rate and bandwidth")
        return
    ratios = l4_ratios(spec)
    mean = float(np.mean(timed))
    hours = kaggle_hours(mean, ratios["used"])
    report.add("projection", f"{KAGGLE_TASKS} tasks on {KAGGLE_GPUS}x L4, {preset}", "measured",
               f"{hours:.1f} h ({mean:.1f} s per task here x {ratios['used']:.1f})",
               f"{spec.name}: L4 slower by {ratios['compute']:.1f}x in bf16 rate, {ratios['bandwidth']:.1f}x in "
               "bandwidth; the larger is used", hours=hours, seconds_per_task=mean, **ratios)


def cpu_training_rows(report: Report, size: Size) -> None:
    """The CPU's own training row: the tiny preset, eager."""
    def run():
        preset = PRESETS["tiny"]()
        row = bench_one(preset, preset.model, preset.data.canvas, preset.optim.global_batch, compile=False,
                        steps=size.cpu_train_steps, warmup=1, world=report.world, dtype=torch.float32)
        report.add("training", "tiny, canvas 10, eager, fp32 (CPU)", "measured",
                   f"{row['sample_steps_per_s']:,.1f} sample-steps/s, peak RSS {_gib(row['peak_memory_bytes'])}",
                   f"load average {row['load_average_1m']:.2f}", **row)
    _part(report, "training", run)


GPU_ONLY_ROWS = (
    ("training", "trm-arc1, canvas 30, rope1d, eager and compiled: sample-steps/s, MFU, peak memory, micro-batch"),
    ("bucketing", "trm-arc1, rope2d, canvases 8..30 and the ARC-AGI-1 mix, eager and compiled"),
    ("puzzle table", "ARC-AGI-1 ids x 512 on the device, device against host storage"),
    ("fine-tuning", "kaggle preset on ARC-AGI-2 tasks, paper-size network: seconds per task, peak memory"),
    ("projection", f"{KAGGLE_TASKS} tasks on {KAGGLE_GPUS}x L4"),
)


def write_report(out_dir: Path, world: World, size_name: str | None, finetune_preset: str) -> list[dict]:
    on_gpu = world.device.type == "cuda"
    size_name = size_name or ("full" if on_gpu else "reduced")
    size = SIZES[size_name]
    report = Report(Path(out_dir), world, size_name)
    report.write()
    if on_gpu:
        catalogue = arc1_catalogue()
        training_rows(report, size, catalogue)
        saved_bytes_rows(report, size)
        puzzle_table_rows(report, catalogue)
        finetune_rows(report, size, finetune_preset, on_gpu=True)
    else:
        for part, name in GPU_ONLY_ROWS:
            report.add(part, name, "unmeasured", note="no CUDA device")
        saved_bytes_rows(report, size)
        cpu_training_rows(report, size)
        finetune_rows(report, size, finetune_preset, on_gpu=False)
    print(f"wrote {report.out_dir / 'report.json'} and {report.out_dir / 'report.md'}", file=sys.stderr)
    return report.rows


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pretrain.distributed import setup_world, teardown_world
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, metavar="DIR")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--report-size", choices=sorted(SIZES), help="default: full on CUDA, reduced on a CPU")
    parser.add_argument("--finetune-preset", default="kaggle-4xl4")
    args = parser.parse_args(argv)
    world = setup_world(args.device)
    try:
        write_report(args.out_dir, world, args.report_size, args.finetune_preset)
    finally:
        teardown_world()
    return 0


if __name__ == "__main__":
    sys.exit(main())
