"""The GPU check that fits one 10-minute command: ``python -m bench.gpu DIR [--minutes 8]``.

Measures, in order of value, what a GPU session should record, and ends within ``--minutes``
(plus at most 30 s) on any machine:

1. the environment: GPU, driver, torch, CUDA, free memory;
2. the paper network (``trm-arc1``, canvas 30, bf16, compiled, global batch 768 in micro-batches
   chosen by ``auto``): sample-steps/s, MFU, peak memory, the first step's seconds (the compile)
   and the micro-batch chosen;
3. the scored path: the Kaggle rerun preset ``kaggle-nvarc`` on ``--tasks`` real ARC-AGI-2
   evaluation tasks fine-tuned as ONE joint shard (``submission.finetune.solve_shard``) by an
   ARC-size network at canvas 30 (the official ARC-size fixture when ``../shared/fixtures/official``
   is there, else a fresh network of the same shapes: time does not depend on the weights), split
   into compile and warm-up, fine-tuning and prediction, with peak memory and the projection to
   240 tasks on 4 L4s (``pretrain.hardware.kaggle_projection``);
4. with the time left: eager against compiled, canvas bucketing, the other network presets, the
   puzzle table's bytes on the device.

Every row goes to ``DIR/report.jsonl`` (one JSON object per line, appended and flushed) and
``DIR/report.md`` (one table, rewritten atomically) the moment it is measured, so a run that is
killed keeps what it measured. Before each row the time left is checked: a row that cannot fit
says ``skipped: out of time``. Should a step overrun anyway (a compile slower than expected), a
watchdog records ``stopped: out of time`` 20 s past the budget and ends the process.

Without CUDA the same command runs reduced (the tiny preset, a few fine-tuning steps of a small
network on the smallest tasks, about a minute) and marks every GPU row ``unmeasured (no GPU)``.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the budget counts the imports below too: torch alone takes seconds

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from arc_data.sources import load_bundled  # noqa: E402
from arc_data.tasks import Task  # noqa: E402
from bench.common import device_name, gib, one_process_world, peak_memory, reset_peak_memory  # noqa: E402
from bench.train import bench_one  # noqa: E402
from pretrain.config import MODEL_PRESETS  # noqa: E402
from pretrain.distributed import World, default_dtype  # noqa: E402
from pretrain.hardware import KAGGLE_GPUS, KAGGLE_TASKS, GpuSpec, gpu_spec, kaggle_projection  # noqa: E402
from pretrain.presets import RUN_PRESETS  # noqa: E402
from submission.config import FINETUNE_PRESETS, FinetuneConfig, fresh_model_config  # noqa: E402
from submission.finetune import TaskOutcome, free_memory, solve_shard  # noqa: E402
from submission.network import Network  # noqa: E402

MEASURED = "measured"
NO_GPU = "unmeasured (no GPU)"
OUT_OF_TIME = "skipped: out of time"
STOPPED = "stopped: out of time"

WATCHDOG_GRACE_S = 20.0  # past the budget, the watchdog ends the run (the promise is 30 s)
STOPPED_EXIT = 3  # the exit status of a run the watchdog ended

# Seconds a row needs at least, or it is skipped: a compile of the paper network's step takes about
# a minute on an H100; the CPU rows run the tiny preset and a small network.
NEEDS_GPU = {"environment": 1.0, "paper": 120.0, "scored": 150.0, "eager": 60.0, "compiled extra": 90.0,
             "puzzle table": 15.0}
NEEDS_CPU = {"environment": 1.0, "paper": 15.0, "scored": 20.0}

ARC1_PUZZLE_IDS = 730_082  # rows of ARC-AGI-1's puzzle table at 1000 augmentations (docs/BENCHMARKS.md)
PAPER_STEPS, PAPER_WARMUP = 5, 2  # timed and untimed steps of a training row on a GPU
CPU_STEPS, CPU_BATCH = 3, 16  # the tiny preset on a CPU: a few seconds even on a busy machine
TARGET_CANVAS_30 = 800.0  # sample-steps/s, compiled, canvas 30: 2x the reference's ~384 on one H100

FIXTURE = Path(__file__).resolve().parents[2] / "shared/fixtures/official/trm-att-arc/step_1234"


# ---------------------------------------------------------------------------------------------
# The report: every row on disk the moment it is made


@dataclass
class Report:
    out_dir: Path
    title: str  # the markdown's heading: the device and the budget
    started: float = STARTED  # perf_counter time each row's at_s counts from
    rows: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the watchdog writes too

    def __post_init__(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "report.jsonl").write_text("")  # a rerun into the same folder starts afresh
        self._write_markdown()

    def add(self, section: str, name: str, status: str, result: str = "", note: str = "", **data) -> dict:
        row = {"section": section, "name": name, "status": status, "result": result, "note": note,
               "at_s": round(time.perf_counter() - self.started, 1), "data": data}
        with self.lock:
            self.rows.append(row)
            with open(self.out_dir / "report.jsonl", "a") as out:
                out.write(json.dumps(row, default=str) + "\n")
                out.flush()
                os.fsync(out.fileno())
            self._write_markdown()
        print(f"[{row['at_s']:6.1f} s] {section}: {name}: {status} {result} {note}".rstrip(), file=sys.stderr,
              flush=True)
        return row

    def _write_markdown(self) -> None:
        lines = [f"# {self.title}", "", "Written by `python -m bench.gpu DIR`; the numbers are in `report.jsonl`.",
                 "", "| section | row | status | result | note |", "| --- | --- | --- | --- | --- |"]
        for row in self.rows:
            cells = [row["section"], row["name"], row["status"], row["result"], row["note"]]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
        path = self.out_dir / "report.md"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)  # a reader never sees half a table


@dataclass
class Check:
    """One run's state: where rows go, the device, and the clock."""

    report: Report
    world: World
    end: float  # perf_counter time by which the run should be done
    tasks: int  # ARC-AGI-2 evaluation tasks in the scored shard (GPU)
    section: str = "environment"  # the section in progress, for the watchdog's row

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.end - time.perf_counter()

    def fits(self, name: str, need: str) -> bool:
        """Whether the row ``name`` fits the time left; if not it is recorded as skipped."""
        seconds = (NEEDS_GPU if self.on_gpu else NEEDS_CPU)[need]
        if self.left() >= seconds:
            return True
        self.report.add(self.section, name, OUT_OF_TIME, note=f"{max(0.0, self.left()):.1f} s left, "
                        f"needs about {seconds:.0f} s")
        return False


def start_watchdog(check: Check, hard_end: float) -> threading.Timer:
    """End the process at ``hard_end`` (perf_counter time) whatever it is doing, once the section in
    progress is recorded as stopped: what was measured is already on disk."""
    def stop() -> None:
        check.report.add(check.section, "(in progress)", STOPPED,
                         note=f"{WATCHDOG_GRACE_S:.0f} s past the budget; the rest was not measured")
        os._exit(STOPPED_EXIT)

    timer = threading.Timer(max(0.0, hard_end - time.perf_counter()), stop)
    timer.daemon = True
    timer.start()
    return timer


def run_section(check: Check, section: str, body) -> None:
    """One section; an error is recorded as a row (and printed) and the next section runs."""
    check.section = section
    try:
        body(check)
    except Exception as error:  # recorded in the report and printed, not swallowed
        traceback.print_exc()
        check.report.add(section, "(section)", f"failed: {type(error).__name__}: {error}")
    finally:
        free_memory(check.device)


# ---------------------------------------------------------------------------------------------
# 1. The environment


def driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (torch does not report it); None without it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(check: Check) -> None:
    if not check.fits("environment", "environment"):
        return
    device = check.device
    data = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_threads": torch.get_num_threads(),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if check.on_gpu:
        free, total = torch.cuda.mem_get_info(device)
        properties = torch.cuda.get_device_properties(device)
        spec = gpu_spec(device)
        data |= {"driver": driver_version(), "cudnn": torch.backends.cudnn.version(), "free_bytes": free,
                 "total_bytes": total, "multiprocessors": properties.multi_processor_count,
                 "capability": f"{properties.major}.{properties.minor}", "bf16": torch.cuda.is_bf16_supported(),
                 "gpu_spec": dataclasses.asdict(spec) if spec else None}
        result = (f"{data['device']}, driver {data['driver']}, torch {data['torch']}, CUDA {data['cuda']}, "
                  f"{gib(free)} free of {gib(total)}")
        note = "" if spec else "GPU not in pretrain.hardware: no MFU, no projection"
    else:
        result, note = f"{data['device']}, torch {data['torch']}, no CUDA", "GPU rows below: unmeasured"
    check.report.add("environment", "machine", MEASURED, result, note, **data)


# ---------------------------------------------------------------------------------------------
# 2. The paper network


def _training_result(row: dict) -> str:
    mfu = f", MFU {100 * row['mfu']:.1f}%" if row["mfu"] is not None else ""
    first = "first step (compile)" if row["compile"] else "first step"
    return (f"{row['sample_steps_per_s']:,.1f} sample-steps/s{mfu}, peak {gib(row['peak_memory_bytes'])}, "
            f"micro-batch {row['micro_batch']} of {row['batch']}, {first} {row['first_step_s']:.1f} s")


def train_row(check: Check, preset: str, *, canvas: int = 30, compile: bool = True, rope2d: bool = False,
              reserve: float = 0.0) -> dict:
    """One training row of ``preset`` on the GPU at the report's size; its timed steps stop
    ``reserve`` seconds before the budget ends."""
    run = RUN_PRESETS[preset]()
    # A bucketed canvas runs the same network (sized for 30) on shorter sequences, as training does.
    config = run.model.replace(pos_encoding="rope2d") if rope2d else run.model
    spec = gpu_spec(check.device)
    return bench_one(run, config, canvas, run.optim.global_batch, compile=compile, steps=PAPER_STEPS,
                     warmup=PAPER_WARMUP, world=check.world, dtype=default_dtype(check.device),
                     puzzle_ids=ARC1_PUZZLE_IDS, peak_tflops=spec.bf16_tflops if spec else None,
                     deadline=check.end - reserve)


PAPER_ROW = "trm-arc1, canvas 30, bf16, compiled, micro-batch auto, global batch 768"


def paper_network(check: Check) -> None:
    if not check.on_gpu:
        check.report.add("paper network", PAPER_ROW, NO_GPU)
        _cpu_training_row(check)
        return
    if not check.fits(PAPER_ROW, "paper"):
        return
    row = train_row(check, "trm-arc1", reserve=NEEDS_GPU["scored"])  # the scored path comes next
    met = "met" if row["sample_steps_per_s"] >= TARGET_CANVAS_30 else "not met"
    check.report.add("paper network", PAPER_ROW, MEASURED, _training_result(row),
                     f"target >= {TARGET_CANVAS_30:.0f}: {met}; {row['steps']} timed steps", **row)


def _cpu_training_row(check: Check) -> None:
    name = f"tiny, canvas 10, batch {CPU_BATCH}, eager, fp32 (the CPU's stand-in)"
    if not check.fits(name, "paper"):
        return
    run = RUN_PRESETS["tiny"]()
    row = bench_one(run, run.model, run.data.canvas, CPU_BATCH, compile=False, steps=CPU_STEPS,
                    warmup=1, world=check.world, dtype=torch.float32, deadline=check.end)
    check.report.add("paper network", name, MEASURED,
                     f"{row['sample_steps_per_s']:,.1f} sample-steps/s, peak RSS {gib(row['peak_memory_bytes'])}",
                     f"load average {row['load_average_1m']:.2f}", **row)


# ---------------------------------------------------------------------------------------------
# 3. The scored path


@dataclass
class Scored:
    """What the scored path needs: the network, the tasks, the preset as run, and its label."""

    network: Network
    network_label: str
    tasks: list[Task]
    config: FinetuneConfig
    label: str


def arc_size_network() -> tuple[Network, str]:
    """The official ARC-size checkpoint when its fixture is here, else a fresh network of its shapes
    (the paper's TRM-Att: fine-tuning time does not depend on the weights)."""
    if FIXTURE.is_file():
        return Network.from_checkpoint(FIXTURE), "the official ARC-size fixture"
    return Network.fresh_init(MODEL_PRESETS["trm-att"]()), "a fresh trm-att network of the same shapes"


def scored_setup(check: Check) -> Scored:
    """The GPU's scored path at full size; a CPU's at reduced size (a small network, a few steps,
    the two smallest tasks), the same code either way."""
    tasks = load_bundled("arc-agi-2", "eval")
    preset = FINETUNE_PRESETS["kaggle-nvarc"]()
    if check.on_gpu:
        network, network_label = arc_size_network()
        config = dataclasses.replace(preset, bucket_canvas=False)  # canvas 30 for every task, as the network
        chosen = tasks[:check.tasks]
        return Scored(network, network_label, chosen, config, f"{SCORED_ROW} ({len(chosen)})")
    # The network's own cycles and one supervision step: the preset's T=4 and 10 steps cost minutes here.
    config = dataclasses.replace(preset, steps=2, num_aug=8, views=2, batch=8, inference_batch=8, warmup_steps=1,
                                 model_overrides={})
    chosen = sorted(tasks, key=lambda t: t.max_side)[:2]
    return Scored(Network.fresh_init(fresh_model_config()), "a fresh cpu_small network", chosen, config,
                  f"{CPU_SCORED_ROW}: 2 steps per task, batch 8, 2 views, no test-time model overrides, the 2 "
                  "smallest ARC-AGI-2 eval tasks as one shard")


SCORED_ROW = "kaggle-nvarc, ARC-size network, canvas 30, one shard of ARC-AGI-2 eval tasks"
CPU_SCORED_ROW = "kaggle-nvarc reduced, the CPU's stand-in"
PROJECTION_ROW = f"{KAGGLE_TASKS} tasks on {KAGGLE_GPUS}x L4"


def scored_path(check: Check) -> None:
    if not check.on_gpu:
        check.report.add("scored path", SCORED_ROW, NO_GPU)
        check.report.add("scored path", PROJECTION_ROW, NO_GPU)
    if not check.fits(SCORED_ROW if check.on_gpu else CPU_SCORED_ROW, "scored"):
        return
    scored = scored_setup(check)
    warmup_s = _warm_up(check, scored)
    outcomes, peak, memory_kind = _timed_shard(check, scored)
    row = shard_row(scored, outcomes, warmup_s)
    check.report.add("scored path", scored.label, MEASURED, _shard_result(row, peak, memory_kind),
                     f"{scored.network_label}; {row['notes']}".rstrip("; "), peak_memory_bytes=peak,
                     memory_kind=memory_kind, **row)
    if check.on_gpu:
        _projection_row(check, row)


def _warm_up(check: Check, scored: Scored) -> float:
    """Where the shard does not time its own compile (a ``TaskOutcome`` without ``warmup_seconds``),
    a one-step run of the same shard on a GPU: it compiles the fine-tuning and prediction graphs, so
    the timed run that follows measures steps, not compilation. Returns its seconds (0 when not run:
    a CPU compiles nothing)."""
    own = "warmup_seconds" in {f.name for f in dataclasses.fields(TaskOutcome)}
    if own or not check.on_gpu:
        return 0.0
    warm = dataclasses.replace(scored.config, steps=1)
    start = time.perf_counter()
    solve_shard(scored.tasks, scored.network, warm, check.device, max(1.0, check.left()),
                default_dtype(check.device), latest_end=check.end)
    return time.perf_counter() - start


def _timed_shard(check: Check, scored: Scored) -> tuple[list[TaskOutcome], int, str]:
    reset_peak_memory(check.device)
    # latest_end: a compile warm-up moves the shard's deadline back, never past the check's own end.
    outcomes = solve_shard(scored.tasks, scored.network, scored.config, check.device, max(1.0, check.left() - 5.0),
                           default_dtype(check.device), latest_end=check.end - 5.0)
    return (outcomes, *peak_memory(check.device))


def shard_row(scored: Scored, outcomes: list[TaskOutcome], warmup_s: float) -> dict:
    """The shard's seconds split into compile and warm-up, fine-tuning (shared by its tasks: counted
    once) and prediction, and per task at the preset's full steps and views."""
    first, config = outcomes[0], scored.config
    done = [o for o in outcomes if not o.failed]
    steps, finetune_s = first.finetune_steps, first.finetune_seconds
    predict_s = sum(o.inference_seconds for o in outcomes)
    # A run cut short by the budget still gives the rates: seconds per step and per view.
    per_step = finetune_s / steps if steps else None
    views = [o.views for o in done if o.views]
    per_view_task = (sum(o.inference_seconds / o.views for o in done if o.views) / len(views)) if views else None
    per_task = (per_step * config.steps + per_view_task * config.views
                if per_step is not None and per_view_task is not None else None)
    return {"tasks": [o.task_id for o in outcomes], "failed": [o.task_id for o in outcomes if o.failed],
            "notes": "; ".join(sorted({o.note for o in outcomes if o.note != "ok"})),
            # The shard's own compile, the same on each of its outcomes: counted once.
            "warmup_seconds": warmup_s + max(getattr(o, "warmup_seconds", 0.0) for o in outcomes),
            "finetune_seconds": finetune_s, "inference_seconds": predict_s, "steps": steps,
            "steps_per_task_preset": config.steps, "views": views, "views_preset": config.views,
            "canvas": first.canvas, "batch": first.batch, "micro_batch": first.micro_batch,
            "seconds_per_step": per_step, "seconds_per_task_full": per_task}


def _shard_result(row: dict, peak: int, memory_kind: str) -> str:
    memory = f"peak {gib(peak)}" + (" RSS" if memory_kind.startswith("cpu") else "")
    return (f"compile and warm-up {row['warmup_seconds']:.1f} s, fine-tuning {row['finetune_seconds']:.1f} s "
            f"({row['steps']} steps of {row['batch']}, micro-batch {row['micro_batch']}), prediction "
            f"{row['inference_seconds']:.1f} s ({'/'.join(map(str, row['views']))} views), {memory}")


def _projection_row(check: Check, row: dict) -> None:
    spec: GpuSpec | None = gpu_spec(check.device)
    if spec is None:
        check.report.add("scored path", PROJECTION_ROW, "unmeasured (GPU not in pretrain.hardware)")
        return
    if row["seconds_per_task_full"] is None:
        check.report.add("scored path", PROJECTION_ROW, "unmeasured (the shard did not both fine-tune and predict)")
        return
    p = kaggle_projection(spec, row["seconds_per_task_full"])
    check.report.add("scored path", f"{PROJECTION_ROW}, kaggle-nvarc", MEASURED,
                     f"{p['hours']:.1f} h ({p['seconds_per_task']:.1f} s per task here at "
                     f"{row['steps_per_task_preset']} steps and {row['views_preset']} views, x {p['used']:.1f})",
                     f"{spec.name}: an L4 is {p['compute']:.1f}x slower in bf16 rate, {p['bandwidth']:.1f}x in "
                     f"bandwidth, the larger is used; plus one compile per worker ({row['warmup_seconds']:.0f} s here)",
                     **p)


# ---------------------------------------------------------------------------------------------
# 4. With the time left


EXTRAS = (  # (row, need, arguments of train_row), most valuable first
    ("trm-arc1, canvas 30, eager", "eager", {"preset": "trm-arc1", "compile": False}),
    ("trm-arc1, canvas 16, rope2d, compiled (bucketing)", "compiled extra",
     {"preset": "trm-arc1", "canvas": 16, "rope2d": True}),
    ("trm-arc1, canvas 8, rope2d, compiled (bucketing)", "compiled extra",
     {"preset": "trm-arc1", "canvas": 8, "rope2d": True}),
    ("trm-mlp-arc1, canvas 30, compiled", "compiled extra", {"preset": "trm-mlp-arc1"}),
    ("hrm-arc1, canvas 30, compiled", "compiled extra", {"preset": "hrm-arc1"}),
    ("trm-arc1, canvas 12, rope2d, compiled (bucketing)", "compiled extra",
     {"preset": "trm-arc1", "canvas": 12, "rope2d": True}),
    ("trm-arc1, canvas 20, rope2d, compiled (bucketing)", "compiled extra",
     {"preset": "trm-arc1", "canvas": 20, "rope2d": True}),
    ("trm-arc1, canvas 24, rope2d, compiled (bucketing)", "compiled extra",
     {"preset": "trm-arc1", "canvas": 24, "rope2d": True}),
)
PUZZLE_ROW = f"puzzle table, {ARC1_PUZZLE_IDS:,} ids x 512, device against host storage"


def extras(check: Check) -> None:
    for name, need, arguments in EXTRAS:
        if not check.on_gpu:
            check.report.add("time left", name, NO_GPU)
        elif check.fits(name, need):
            run_section(check, "time left", lambda c, n=name, a=arguments: _extra_row(c, n, a))
    if not check.on_gpu:
        check.report.add("time left", PUZZLE_ROW, NO_GPU)
    elif check.fits(PUZZLE_ROW, "puzzle table"):
        run_section(check, "time left", puzzle_table_rows)


def _extra_row(check: Check, name: str, arguments: dict) -> None:
    row = train_row(check, **arguments)
    check.report.add("time left", name, MEASURED, _training_result(row), f"{row['steps']} timed steps", **row)


def puzzle_table_rows(check: Check) -> None:
    """The bytes ARC-AGI-1's table keeps on the device, and one step's more, for each storage."""
    from pretrain.puzzle_embedding import PuzzleEmbedding
    device = check.device
    for storage in ("device", "host"):
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        table = PuzzleEmbedding(ARC1_PUZZLE_IDS, 512, device, storage)
        resident = torch.cuda.memory_allocated(device) - before
        torch.cuda.reset_peak_memory_stats(device)
        ids = torch.randint(0, ARC1_PUZZLE_IDS, (768,), device=device)
        table.lookup(ids).sum().backward()
        table.step(1e-2, 0.1)
        torch.cuda.synchronize(device)
        transient = torch.cuda.max_memory_allocated(device) - before - resident
        check.report.add("time left", f"puzzle table, {storage} storage", MEASURED,
                         f"{gib(resident)} resident on the device, {transient / 2**20:.1f} MiB more during a step "
                         "of 768", resident_bytes=resident, step_bytes=transient)
        del table


# ---------------------------------------------------------------------------------------------
# Command line


SECTIONS = (("environment", environment), ("paper network", paper_network), ("scored path", scored_path),
            ("time left", extras))


def run_check(out_dir: Path, world: World, *, minutes: float, tasks: int = 3, started: float = STARTED,
              watchdog: bool = True) -> list[dict]:
    """Every section in order within ``minutes`` from ``started`` (perf_counter time; by default this
    module's import); the rows. ``watchdog``: end the process if a step overruns (not for a caller
    that must go on, such as a test)."""
    end = started + 60.0 * minutes
    title = f"GPU check: {device_name(world.device)}, budget {minutes:g} min"
    check = Check(Report(out_dir, title, started), world, end, tasks)
    timer = start_watchdog(check, end + WATCHDOG_GRACE_S) if watchdog else None
    try:
        for section, body in SECTIONS:
            run_section(check, section, body)
    finally:
        if timer is not None:
            timer.cancel()
    return check.report.rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, metavar="DIR", help="where report.jsonl and report.md go")
    parser.add_argument("--minutes", type=float, default=8.0,
                        help="the run ends within this many minutes plus 30 s (default 8: one 10-minute command)")
    parser.add_argument("--tasks", type=int, default=3, choices=(2, 3, 4),
                        help="ARC-AGI-2 evaluation tasks in the scored shard on a GPU (default 3)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with one_process_world(args.device, "check") as world:
        run_check(args.out_dir, world, minutes=args.minutes, tasks=args.tasks)
    print(f"wrote {args.out_dir / 'report.jsonl'} and {args.out_dir / 'report.md'} "
          f"in {time.perf_counter() - STARTED:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
