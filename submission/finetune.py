"""Solve one task: fine-tune a copy of the network on its demonstrations, then predict and vote.

    outcome = solve_task(task, network, config, device, seconds)
    outcomes = solve_shard(tasks, network, config, device, seconds)   # joint fine-tuning of several

The task gets new puzzle rows (one per augmented version, started at the network's mean row), a
few steps that train only those rows, then full fine-tuning with the same ``train_step`` as
pretraining. Then every test input is predicted under as many augmented views as the time share
allows (the identity first; each view ``samples_per_view`` times, with the ``latent_noise`` and
``predict_overrides`` that apply only while predicting), mapped back and ranked by the configured
selector. How many steps, at
what learning rate, and how much time inference keeps: ``submission/schedule.py``. Nothing here is
shared between tasks, so a task can run on any worker and a failure stays inside it.

The two phases share one deadline, fixed when the shard starts. Fine-tuning runs its batch in
micro-batches that fit the GPU (gradients accumulated, so the optimizer sees the recipe's batch).
Each phase that runs out of GPU memory runs again in the time that is left, after the failed
attempt's tensors are freed: fine-tuning at half its micro-batch, prediction at half its batch; the
sizes that worked are recorded in the outcome.

A task that cannot take part (a grid larger than the network's canvas, data that fails to encode)
fails alone before training, with its reason; the others of its shard go on. An error in the joint
fine-tuning (other than out-of-memory) falls back to predicting from the network as it was, and an
error in one task's prediction fails that task only. Each outcome is handed to ``report`` the moment
it is made, so a worker that dies later loses only the task in flight.

Compiling is the run's cost, not a task's: a compiled network runs one untimed warm-up per shape
(each micro-batch of a step, the prediction batch) the first time a worker meets it, and the shard's
deadline moves back by what that took (never past the run's own end). A compile that fails prints one
line and the worker goes on eagerly.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch

from arc_data.tasks import Task
from pretrain.config import DataConfig, ModelConfig, OptimConfig
from pretrain.data import PuzzleCatalogue, TrainStream, canvas_for
from pretrain.distributed import World
from pretrain.evaluation import ViewBatch, predict, task_views, view_predictions
from pretrain.learner import Learner, free_memory, train_step, warm_up_train_step
from pretrain.memory import auto_micro_batch
from pretrain.model import RecursiveModel, build_model
from submission.config import FinetuneConfig, check_inference_changes
from submission.network import Network
from submission.schedule import FinetuneSchedule, inference_reserve
from augment.voting import NEEDS_LOG_PROBS, RANK_KEYS, Evidence, gather_evidence, rank_evidence

# Views a CPU predicts to time inference (its time per view hardly depends on the batch).
CPU_PROBE_VIEWS = 8
# Ranked candidates kept per test input (enough for pass@K reports).
KEEP_CANDIDATES = 100
# Runs of a phase that runs out of GPU memory: the configured batch, then half, then a quarter.
OOM_ATTEMPTS = 3

T = TypeVar("T")


@dataclass
class TaskOutcome:
    task_id: str
    ranked: list[list[list[list[int]]]]  # per test input: candidate grids (lists), best first
    finetune_steps: int = 0
    views: int = 0
    finetune_seconds: float = 0.0
    inference_seconds: float = 0.0
    canvas: int = 0
    batch: int = 0  # fine-tuning samples per optimizer step (the preset's)
    micro_batch: int = 0  # fine-tuning samples per forward/backward pass, as run (halved after running out of memory)
    inference_batch: int = 0  # views per prediction batch, as run
    warmup_seconds: float = 0.0  # compiling before fine-tuning (off the task's clock; 0 once the worker is warm)
    note: str = "ok"  # one line: "ok", or why the task failed
    failed: bool = False  # True: no prediction (an error, out of memory for good, its worker died)
    ranked_by: dict[str, list[list[list[list[int]]]]] = field(default_factory=dict)  # compare_selectors only
    # keep_evidence only: per test input, every distinct candidate's evidence (augment.voting.Evidence.to_dict)
    evidence: list[list[dict]] = field(default_factory=list)

    @classmethod
    def failure(cls, task: Task, note: str) -> "TaskOutcome":
        """A task that keeps its fallback attempts, with the one-line reason."""
        return cls(task.id, [[] for _ in task.test_inputs], note=note, failed=True)


def task_canvas(task: Task, network: Network, config: FinetuneConfig) -> int:
    return canvas_for(max(max(g.shape) for g in _inputs_and_demonstrations(task)),
                      config.bucket_canvas and network.can_bucket, network.config.canvas)


def shard_canvas(tasks: list[Task], network: Network, config: FinetuneConfig) -> int:
    """The canvas tasks fine-tuned together run at: the largest of theirs."""
    return max(task_canvas(t, network, config) for t in tasks)


def _inputs_and_demonstrations(task: Task) -> list[np.ndarray]:
    """The grids fine-tuning and prediction read: the demonstration pairs and the test inputs."""
    return [g for pair in task.train for g in pair] + list(task.test_inputs)


def why_task_cannot_run(task: Task, network: Network) -> str | None:
    """The one-line reason ``task`` cannot take part with this network, or None when it can."""
    canvas = network.config.canvas
    named = [(f"demonstration {k + 1}'s {side}", grid) for k, pair in enumerate(task.train)
             for side, grid in zip(("input", "output"), pair)]
    named += [(f"test input {k + 1}", grid) for k, grid in enumerate(task.test_inputs)]
    for name, grid in named:
        if max(grid.shape) > canvas:
            rows, cols = grid.shape
            return f"{name} is {rows}x{cols}, larger than the network's {canvas}x{canvas} canvas"
    return None


def solve_task(task: Task, network: Network, config: FinetuneConfig, device: torch.device, seconds: float,
               dtype: torch.dtype = torch.float32, **options) -> TaskOutcome:
    """Fine-tune a copy of the network on one task and predict it, within ``seconds``."""
    return solve_shard([task], network, config, device, seconds, dtype, **options)[0]


def solve_shard(tasks: list[Task], network: Network, config: FinetuneConfig, device: torch.device, seconds: float,
                dtype: torch.dtype = torch.float32, *, report: Callable[[TaskOutcome], None] | None = None,
                log: Callable[[str], None] | None = None, latest_end: float = math.inf) -> list[TaskOutcome]:
    """Fine-tune ONE copy of the network on several tasks together (``config.steps`` per task), then
    predict each, all within ``seconds``; returns the outcomes in the order of ``tasks``.

    ``report`` gets each outcome as soon as it is made (failed tasks first); ``log`` one-line notes
    (a compile or fine-tuning failure); ``latest_end`` (``time.perf_counter()`` time) is the run's end,
    past which a compile warm-up never pushes the shard. Each phase retries on its own when it runs
    out of GPU memory (fine-tuning at half the micro-batch, prediction at half the batch), within the
    time left of the one deadline fixed here. A task whose phase runs out of memory at every size
    tried is returned failed.
    """
    network = network.with_overrides(config.model_overrides)
    clock = ShardClock(time.perf_counter() + seconds, latest_end)
    outcomes: dict[str, TaskOutcome] = {}

    def finish(outcome: TaskOutcome) -> None:
        outcomes[outcome.task_id] = outcome
        if report is not None:
            report(outcome)

    runnable = []
    for task in tasks:
        reason = why_task_cannot_run(task, network)
        if reason is None:
            runnable.append(task)
        else:
            finish(TaskOutcome.failure(task, reason))
    catalogue, runnable = _catalogue(runnable, network, config, finish)
    if runnable:
        _solve_runnable(runnable, catalogue, network, config, device=device, dtype=dtype, clock=clock, finish=finish,
                        log=log or (lambda line: None))
    return [outcomes[t.id] for t in tasks]


def solve_task_variants(task: Task, network: Network, config: FinetuneConfig, variants: dict[str, dict],
                        device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, TaskOutcome]:
    """Fine-tune on one task once (``config.steps`` steps, no time limit), then predict it under each
    variant (changes of ``INFERENCE_FIELDS`` only) with every candidate's evidence kept: inference
    options compared on one and the same fine-tuned network (``python -m bench.inference``)."""
    if config.steps is None:
        raise ValueError("comparing variants needs a fixed number of fine-tuning steps")
    for name, changes in variants.items():
        check_inference_changes(name, changes)
    network = network.with_overrides(config.model_overrides)
    reason = why_task_cannot_run(task, network)
    if reason is not None:
        raise ValueError(f"task {task.id}: {reason}")
    catalogue = task_catalogue([task], network, config)
    canvas = task_canvas(task, network, config)
    micro_batch = first_micro_batch(network.config, config, canvas, device=device, dtype=dtype)
    tuned = _finetune(1, network, config, catalogue, canvas=canvas, micro_batch=micro_batch, device=device,
                      dtype=dtype, clock=ShardClock(math.inf), log=lambda line: None)
    outcomes = {}
    for name, changes in variants.items():
        variant = dataclasses.replace(config, **changes, keep_evidence=True)
        outcome = _predict_task(task, catalogue.groups[0], tuned.learner, variant, canvas, variant.inference_batch,
                                device, math.inf)
        outcome.finetune_steps = tuned.steps
        outcomes[name] = outcome
    return outcomes


@dataclass
class ShardClock:
    """A shard's one deadline (``time.perf_counter()`` time), moved back by compile warm-ups, never
    past the run's own end."""

    deadline: float
    latest: float = math.inf

    def extend(self, seconds: float) -> None:
        self.deadline = min(self.deadline + seconds, self.latest)


def task_catalogue(tasks: list[Task], network: Network, config: FinetuneConfig) -> PuzzleCatalogue:
    """The puzzle catalogue fine-tuning trains on: the tasks' demonstrations, each task's augmented
    versions (upscaled ones only where they fit the canvas the tasks run at)."""
    return PuzzleCatalogue([], [t.without_solutions() for t in tasks], config.num_aug, config.seed,
                           canvas=shard_canvas(tasks, network, config), max_scale=config.max_scale)


def _catalogue(tasks: list[Task], network: Network, config: FinetuneConfig,
               finish: Callable[[TaskOutcome], None]) -> tuple[PuzzleCatalogue | None, list[Task]]:
    """The puzzle catalogue of the tasks whose data encode; each task whose data does not fails alone."""
    try:
        return (task_catalogue(tasks, network, config), tasks) if tasks else (None, [])
    except Exception:  # some task's data: found below, one task at a time
        pass
    good = []
    for task in tasks:
        try:
            task_catalogue([task], network, config)
            good.append(task)
        except Exception as error:
            finish(TaskOutcome.failure(task, f"its data failed to encode ({describe(error)})"))
    return (task_catalogue(good, network, config) if good else None), good


def _solve_runnable(tasks: list[Task], catalogue: PuzzleCatalogue, network: Network, config: FinetuneConfig, *,
                    device: torch.device, dtype: torch.dtype, clock: ShardClock,
                    finish: Callable[[TaskOutcome], None], log: Callable[[str], None]) -> None:
    """Fine-tune on the tasks jointly, then predict and ``finish`` each one."""
    canvas = shard_canvas(tasks, network, config)
    start = time.perf_counter()
    note = "ok"
    try:
        tuned, micro_batch = _halving_on_oom(
            lambda m: _finetune(len(tasks), network, config, catalogue, canvas=canvas, micro_batch=m, device=device,
                                dtype=dtype, clock=clock, log=log),
            first_micro_batch(network.config, config, canvas, device=device, dtype=dtype), device)
    except Exception as error:  # not out-of-memory (halved above): the tasks are predicted all the same
        if cuda_context_broken(error):
            raise
        note = f"fine-tuning failed ({describe(error)}), predicted from the network as it was"
        log(f"{', '.join(t.id for t in tasks)}: {note}")
        tuned, micro_batch = _Tuned(_new_learner(network, config, catalogue, micro_batch=config.batch, device=device,
                                                 dtype=dtype), 0), 0
    finetune_seconds = time.perf_counter() - start - (tuned.warmup_seconds if tuned else 0.0)
    if tuned is None:
        for task in tasks:
            finish(TaskOutcome.failure(task, f"out of GPU memory in fine-tuning, down to micro-batch {micro_batch}"))
        return

    inference_batch = config.inference_batch
    for k, (task, group) in enumerate(zip(tasks, catalogue.groups)):
        # Each task still to predict gets an equal share of the time left.
        task_deadline = time.perf_counter() + (clock.deadline - time.perf_counter()) / (len(tasks) - k)
        outcome, inference_batch = _predict_safely(task, group, tuned.learner, config, canvas=canvas,
                                                   inference_batch=inference_batch, device=device,
                                                   deadline=task_deadline)
        if not outcome.failed:
            outcome.note = note
        outcome.finetune_steps, outcome.finetune_seconds = tuned.steps, finetune_seconds
        outcome.warmup_seconds = tuned.warmup_seconds
        outcome.batch, outcome.micro_batch = config.batch, micro_batch
        outcome.inference_batch, outcome.canvas = inference_batch, canvas
        finish(outcome)


def _predict_safely(task: Task, group, learner: Learner, config: FinetuneConfig, *, canvas: int, inference_batch: int,
                    device: torch.device, deadline: float) -> tuple[TaskOutcome, int]:
    """One task's prediction, halving its batch on out-of-memory; any other error fails this task alone."""
    try:
        outcome, inference_batch = _halving_on_oom(
            lambda b: _predict_task(task, group, learner, config, canvas, b, device, deadline), inference_batch, device)
    except Exception as error:
        if cuda_context_broken(error):
            raise
        return TaskOutcome.failure(task, f"prediction failed ({describe(error)})"), inference_batch
    if outcome is None:
        return TaskOutcome.failure(task, f"out of GPU memory in prediction, down to batch {inference_batch}"), \
            inference_batch
    if outcome.views == 0:  # cannot happen once why_task_cannot_run passed; never report it as "ok"
        return TaskOutcome.failure(task, "no view of its test inputs was predicted"), inference_batch
    return outcome, inference_batch


def describe(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


def cuda_context_broken(error: BaseException) -> bool:
    """A CUDA error other than out-of-memory (an illegal address, a device-side assert, a launch
    failure) leaves the process's CUDA context unusable, so its worker must not take more tasks."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch 2.8 and later
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    return isinstance(error, RuntimeError) and "CUDA error" in str(error)


def _halving_on_oom(run: Callable[[int], T], batch: int, device: torch.device) -> tuple[T | None, int]:
    """``run(batch)``; after running out of GPU memory, free it and run again at half the batch
    (``OOM_ATTEMPTS`` runs in all). Returns the result and the batch it ran at, or None and the last
    batch tried."""
    for attempt in range(OOM_ATTEMPTS):
        if attempt > 0:
            batch = max(1, batch // 2)
        try:
            return run(batch), batch
        except torch.cuda.OutOfMemoryError:
            pass  # retried below: memory is freed once the traceback, which holds the tensors, is gone
        free_memory(device)
    return None, batch


@dataclass
class _Tuned:
    """The fine-tuning phase's result: the learner (network and puzzle rows), its steps, and the
    seconds its compile warm-up took (charged to the run, not to the tasks)."""

    learner: Learner
    steps: int
    warmup_seconds: float = 0.0


@dataclass
class _WorkerMemo:
    """What one worker process measures once and reuses for every later task: the shapes whose
    compiled graphs it already holds (torch.compile's cache is per process and shared by every
    copy of the network), the seconds per predicted view, and whether compiling failed here."""

    warm: set = field(default_factory=set)
    seconds_per_view: dict = field(default_factory=dict)
    eager: bool = False


_MEMO = _WorkerMemo()


def forget_measurements() -> None:
    """Start this process's memo afresh (tests; a worker keeps it for its whole life)."""
    global _MEMO
    _MEMO = _WorkerMemo()


def _build_model(network: Network, device: torch.device, dtype: torch.dtype) -> RecursiveModel:
    """The network every task starts from, on ``device``."""
    model = build_model(network.config, dtype=dtype)
    model.load_state_dict(network.state)
    return model.to(device)


def first_micro_batch(model_config: ModelConfig, config: FinetuneConfig, canvas: int, *, device: torch.device,
                      dtype: torch.dtype) -> int:
    """The micro-batch fine-tuning starts at: the configured one, or ("auto") what fits the GPU."""
    if config.micro_batch is None:
        return config.batch
    if config.micro_batch == "auto":
        return auto_micro_batch(model_config, canvas, config.batch, device, dtype)
    return min(int(config.micro_batch), config.batch)


def compiles(config: FinetuneConfig, device: torch.device) -> bool:
    """Whether fine-tuning compiles the network: the preset's choice (None: on CUDA), unless
    compiling already failed in this worker."""
    wanted = config.compile if config.compile is not None else device.type == "cuda"
    return wanted and not _MEMO.eager


def _new_learner(network: Network, config: FinetuneConfig, catalogue: PuzzleCatalogue, *, micro_batch: int,
                 device: torch.device, dtype: torch.dtype) -> Learner:
    """A fresh copy of the network with the catalogue's puzzle rows, each at the network's mean row."""
    world = World(rank=0, size=1, local_rank=0, device=device)
    optim = OptimConfig(global_batch=config.batch, lr=config.lr, optimizer=config.optimizer,
                        lr_warmup_steps=config.warmup_steps,
                        weight_decay=config.weight_decay, puzzle_lr=config.puzzle_lr, ema_decay=0.0,
                        train_network=config.embedding_steps == 0, micro_batch=micro_batch,
                        improvement_targets=config.improvement_targets)
    learner = Learner(network.config, optim, catalogue.num_ids, world, dtype, config.seed,
                      model=_build_model(network, device, dtype), compile=compiles(config, device))
    learner.puzzles.weight[:] = network.puzzle_mean.to(device)
    return learner


def _finetune(num_tasks: int, network: Network, config: FinetuneConfig, catalogue: PuzzleCatalogue, *, canvas: int,
              micro_batch: int, device: torch.device, dtype: torch.dtype, clock: ShardClock,
              log: Callable[[str], None]) -> _Tuned:
    """A fresh copy of the network, fine-tuned on the catalogue's tasks at ``config.batch`` (run
    ``micro_batch`` samples at a time) for ``config.steps`` per task, or (steps None) as long as the
    time before the clock's deadline allows once inference's share is kept back; the learning rate
    follows ``submission.schedule``. A compiled network is warmed up first, off the clock."""
    learner = _new_learner(network, config, catalogue, micro_batch=micro_batch, device=device, dtype=dtype)
    warmup_seconds = _warm_up(learner, canvas, config, device=device, log=log)
    clock.extend(warmup_seconds)
    stream = TrainStream(catalogue, DataConfig(train_sources=(), held_out_sources=(), canvas=canvas,
                                               translate=config.translate, seed=config.seed))
    slots = learner.new_slots(config.batch, canvas)

    reserve = _inference_reserve(catalogue.groups, learner, config, canvas=canvas, device=device,
                                 seconds=clock.deadline - time.perf_counter())
    schedule = FinetuneSchedule.for_config(config, num_tasks, time.perf_counter(), clock.deadline - reserve)
    steps = exact_streak = 0
    while not schedule.done(steps, time.perf_counter()):
        step_start = time.perf_counter()
        if steps == config.embedding_steps:
            learner.optim.train_network = True
        learner.lr_factor = schedule.lr_factor(steps, step_start)
        metrics = train_step(learner, slots, stream)
        steps += 1
        schedule.step_took(time.perf_counter() - step_start)
        if config.stop_when_fitted:
            exact_streak = exact_streak + 1 if _all_exact(metrics) else 0
            if exact_streak == config.stop_when_fitted:
                schedule.cool_down(steps, time.perf_counter())
    return _Tuned(learner, steps, warmup_seconds)


def _all_exact(metrics: dict[str, torch.Tensor]) -> bool:
    """Whether a step's halted samples were all predicted exactly (and there were some). Reading the
    sums waits for the step to finish on a GPU, which is why it runs only when the option is on."""
    count = metrics["count"].item()
    return count > 0 and metrics["exact_accuracy"].item() == count


def _warm_up(learner: Learner, canvas: int, config: FinetuneConfig, *, device: torch.device,
             log: Callable[[str], None]) -> float:
    """Compile, off the task's clock, every graph fine-tuning and prediction will run at this canvas;
    returns the seconds it took (0 when the worker holds them already or nothing is compiled). A
    compile error switches this worker to eager mode with one log line."""
    model = learner.model
    key = (repr(model.config), canvas, config.batch, learner.micro_batch_size(canvas, config.batch),
           config.inference_batch, str(learner.dtype))
    if not model.compiled or key in _MEMO.warm:
        return 0.0
    start = time.perf_counter()
    try:
        warm_up_train_step(learner, canvas, config.batch)
        cells = canvas * canvas
        with predicting(model, config):
            predict(model, learner.puzzles, np.zeros((config.inference_batch, cells), np.uint8),
                    np.zeros(config.inference_batch, np.int64), config.inference_batch, device)
        _MEMO.warm.add(key)
    except Exception as error:
        if isinstance(error, torch.cuda.OutOfMemoryError) or cuda_context_broken(error):
            raise
        log(f"compiling failed ({describe(error)}): this worker goes on without compiling")
        _MEMO.eager = True
        model.uncompile_step()
    return time.perf_counter() - start


def _inference_reserve(groups, learner: Learner, config: FinetuneConfig, *, canvas: int, device: torch.device,
                       seconds: float) -> float:
    """Seconds to keep for predicting every task's views, and at least each task's first batch: the
    seconds per view, measured at the real inference batch, times the views."""
    if not math.isfinite(seconds):
        return 0.0
    views = [prediction_views(g, config, canvas) for g in groups]
    rows = [len(v.inputs) for v in views]
    seconds_per_view = _seconds_per_view(learner, max(views, key=lambda v: len(v.inputs)), config, canvas=canvas,
                                         device=device)
    # The least prediction of a task: a compiled network's whole first batch (every batch runs at
    # full size), an eager one's first view of each test input (its batches follow the time left).
    if learner.model.compiled:
        first_views = config.inference_batch * len(rows)
    else:
        first_views = sum(len(g.task.test_inputs) for g in groups)
    return inference_reserve(seconds_per_view, sum(rows), seconds, minimum_views=first_views)


def _view_key(learner: Learner, config: FinetuneConfig, canvas: int) -> tuple:
    """What the seconds per predicted view depend on: the network's shape and recursions, the canvas,
    the batch."""
    model = learner.model
    return (repr(model.config), repr(config.predict_overrides), canvas, config.inference_batch, model.compiled,
            str(learner.dtype))


def _seconds_per_view(learner: Learner, views, config: FinetuneConfig, *, canvas: int, device: torch.device) -> float:
    """Seconds to predict one view, measured once per worker and shape. The probe is a whole
    inference batch (on an accelerator the time per view depends on the batch; a compiled network
    pads every batch to full size), run after the warm-up that compiled it; an eager CPU's time per
    view hardly depends on the batch, so a few views do there."""
    model, key = learner.model, _view_key(learner, config, canvas)
    if key not in _MEMO.seconds_per_view:
        eager_cpu = device.type == "cpu" and not model.compiled
        probe_rows = CPU_PROBE_VIEWS if eager_cpu else config.inference_batch
        rows = min(probe_rows, len(views.inputs))
        tick = time.perf_counter()
        with predicting(model, config):
            predict(model, learner.puzzles, views.inputs[:rows], views.puzzle_ids[:rows], config.inference_batch,
                    device)
        _MEMO.seconds_per_view[key] = (time.perf_counter() - tick) / rows
    return _MEMO.seconds_per_view[key]


def _predict_task(task: Task, group, learner: Learner, config: FinetuneConfig, canvas: int, inference_batch: int,
                  device: torch.device, deadline: float) -> TaskOutcome:
    infer_start = time.perf_counter()
    views = prediction_views(group, config, canvas)
    seconds_per_view = _MEMO.seconds_per_view.get(_view_key(learner, config, canvas), 0.0)
    if config.latent_noise:  # the same draws for a task whatever worker or order it runs in
        torch.manual_seed(zlib.crc32(f"{config.seed}:{task.id}".encode()))
    with predicting(learner.model, config):
        log_probs, q_halt = _predict_until(learner, views, batch=inference_batch, device=device, deadline=deadline,
                                         seconds_per_view=seconds_per_view)
    done = len(q_halt)
    views.inputs, views.puzzle_ids = views.inputs[:done], views.puzzle_ids[:done]
    views.test_index, views.version = views.test_index[:done], views.version[:done]
    keep_log_probs = config.selector in NEEDS_LOG_PROBS or config.compare_selectors or config.keep_evidence
    predictions = view_predictions(views, group.table, log_probs, q_halt, canvas=canvas, keep_log_probs=keep_log_probs)
    evidence = [gather_evidence([p for p in predictions if p.test_index == i]) for i in range(len(task.test_inputs))]
    ranked_by = {name: _ranked_grids(evidence, name) for name in (RANK_KEYS if config.compare_selectors else ())}
    return TaskOutcome(task.id, _ranked_grids(evidence, config.selector), views=len(set(views.version)),
                       inference_seconds=time.perf_counter() - infer_start, canvas=canvas, ranked_by=ranked_by,
                       evidence=[[e.to_dict() for e in ev] for ev in evidence] if config.keep_evidence else [])


def prediction_views(group, config: FinetuneConfig, canvas: int) -> ViewBatch:
    """The rows a task's prediction runs: its first ``config.views`` augmented views, each view's
    rows (one per test input) repeated ``samples_per_view`` times in a row, so that any prefix holds
    whole views and the identity comes first."""
    views = task_views(group.task, group.table, group.first_id, min(config.views, len(group.table)), canvas=canvas)
    if config.samples_per_view == 1:
        return views
    version = np.asarray(views.version)
    firsts = sorted(set(views.version), key=views.version.index)
    rows = np.concatenate([np.tile(np.flatnonzero(version == v), config.samples_per_view) for v in firsts])
    return ViewBatch(views.inputs[rows], views.puzzle_ids[rows], [views.test_index[r] for r in rows],
                     [views.version[r] for r in rows])


@contextmanager
def predicting(model: RecursiveModel, config: FinetuneConfig) -> Iterator[None]:
    """The model as prediction runs it: with ``config.predict_overrides`` and ``config.latent_noise``
    in force, both put back afterwards (fine-tuning never sees them)."""
    saved = model.config, model.latent_noise
    model.config = model.config.replace(**config.predict_overrides)
    model.latent_noise = config.latent_noise
    try:
        yield
    finally:
        model.config, model.latent_noise = saved


def _ranked_grids(evidence: list[list[Evidence]], selector: str) -> list[list[list[list[int]]]]:
    """Per test input, the candidates as plain lists (they cross process boundaries), best first, the
    best ``KEEP_CANDIDATES`` of each."""
    return [[e.grid.tolist() for e in rank_evidence(ev, selector)[:KEEP_CANDIDATES]] for ev in evidence]


def _predict_until(learner: Learner, views, *, batch: int, device: torch.device, deadline: float,
                   seconds_per_view: float) -> tuple[np.ndarray, np.ndarray]:
    """Predict the views in order, a batch at a time, while the next batch still fits before the
    deadline; the first batch (the identity view of every test input first) always runs.

    An eager network sizes each batch to the time left (at ``seconds_per_view``), so a short share
    still predicts a few views rather than overrunning on a whole batch; a compiled one keeps its
    batch (one graph per shape) and stops when the next whole batch would end past the deadline."""
    model = learner.model
    parts, seconds_per_batch, begin = [], 0.0, 0
    first_views = len(set(views.test_index))  # one view of each test input
    while begin < len(views.inputs):
        left = deadline - time.perf_counter()
        size = batch
        if not model.compiled and seconds_per_view > 0 and math.isfinite(left):
            size = min(batch, int(left / seconds_per_view))
            if not parts:
                size = max(size, first_views)
        if parts and (size < 1 or (model.compiled and seconds_per_batch > left)):
            break
        tick = time.perf_counter()
        parts.append(predict(model, learner.puzzles, views.inputs[begin:begin + size],
                             views.puzzle_ids[begin:begin + size], batch, device))
        seconds_per_batch, begin = time.perf_counter() - tick, begin + size
    if not parts:
        return np.zeros((0, views.inputs.shape[1], model.config.vocab), np.float32), np.zeros(0, np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
