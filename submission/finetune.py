"""Solve one task: fine-tune a copy of the network on its demonstrations, then predict and vote.

    outcome = solve_task(task, network, config, device, seconds)
    outcomes = solve_shard(tasks, network, config, device, seconds)   # joint fine-tuning of several

The task gets new puzzle rows (one per augmented version, started at the network's mean row), a
few steps that train only those rows, then full fine-tuning with the same ``train_step`` as
pretraining. Then every test input is predicted under as many augmented views as the time share
allows (the identity first), mapped back and ranked by the configured selector. How many steps, at
what learning rate, and how much time inference keeps: ``submission/schedule.py``. Nothing here is
shared between tasks, so a task can run on any worker and a failure stays inside it.

The two phases share one deadline, fixed when the shard starts. Fine-tuning runs its batch in
micro-batches that fit the GPU (gradients accumulated, so the optimizer sees the recipe's batch).
Each phase that runs out of GPU memory runs again in the time that is left, after the failed
attempt's tensors are freed: fine-tuning at half its micro-batch, prediction at half its batch; the
sizes that worked are recorded in the outcome.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np
import torch

from arc_data.tasks import Task
from pretrain.config import ModelConfig
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream, canvas_for
from pretrain.distributed import World
from pretrain.evaluation import predict, task_views, view_predictions
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.memory import auto_micro_batch
from pretrain.model import RecursiveModel, build_model
from submission.config import FinetuneConfig
from submission.schedule import FinetuneSchedule, inference_reserve
from submission.voting import SELECTORS, rank_candidates

# Views predicted to time inference before fine-tuning (the time scales with the views; a full batch
# would cost as much as the inference itself on a large canvas).
PROBE_VIEWS = 4
# Ranked candidates kept per test input (enough for pass@K reports).
KEEP_CANDIDATES = 100
# Runs of a phase that runs out of GPU memory: the configured batch, then half, then a quarter.
OOM_ATTEMPTS = 3

T = TypeVar("T")


@dataclass
class Network:
    """The starting point of every task: a network's weights and the mean of its trained puzzle rows."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    puzzle_mean: torch.Tensor
    fresh: bool  # True: a fresh initialisation (no checkpoint given)

    @classmethod
    def fresh_init(cls, config: ModelConfig, seed: int = 0) -> "Network":
        model = build_model(config, seed=seed)
        return cls(config, model.state_dict(), torch.zeros(config.puzzle_dim), fresh=True)

    def with_overrides(self, overrides: dict) -> "Network":
        """The same weights under test-time model settings (e.g. more cycles, fewer supervision steps)."""
        return dataclasses.replace(self, config=self.config.replace(**overrides)) if overrides else self

    @property
    def can_bucket(self) -> bool:
        """Smaller canvases keep their meaning with 2-D positions, or for a network that never trained."""
        return self.fresh or self.config.pos_encoding == "rope2d"


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
    note: str = "ok"  # one line: "ok", or why the task failed
    failed: bool = False  # True: no prediction (an error, out of memory for good, its worker died)
    ranked_by: dict[str, list[list[list[list[int]]]]] = field(default_factory=dict)  # compare_selectors only

    @classmethod
    def failure(cls, task: Task, note: str) -> "TaskOutcome":
        """A task that keeps its fallback attempts, with the one-line reason."""
        return cls(task.id, [[] for _ in task.test_inputs], note=note, failed=True)


def task_canvas(task: Task, network: Network, config: FinetuneConfig) -> int:
    grids = [g for pair in task.train for g in pair] + list(task.test_inputs)
    return canvas_for(max(max(g.shape) for g in grids), config.bucket_canvas and network.can_bucket,
                      network.config.canvas)


def solve_task(task: Task, network: Network, config: FinetuneConfig, device: torch.device, seconds: float,
               dtype: torch.dtype = torch.float32) -> TaskOutcome:
    """Fine-tune a copy of the network on one task and predict it, within ``seconds``."""
    return solve_shard([task], network, config, device, seconds, dtype)[0]


def solve_shard(tasks: list[Task], network: Network, config: FinetuneConfig, device: torch.device, seconds: float,
                dtype: torch.dtype = torch.float32) -> list[TaskOutcome]:
    """Fine-tune ONE copy of the network on several tasks together (``config.steps`` per task), then
    predict each, all within ``seconds``.

    Each phase retries on its own when it runs out of GPU memory (fine-tuning at half the
    micro-batch, prediction at half the batch), within the time left of the one deadline fixed here:
    an out-of-memory error in prediction keeps the finished fine-tuning. A task whose phase runs out
    of memory at every size tried is returned failed.
    """
    network = network.with_overrides(config.model_overrides)
    start = time.perf_counter()
    deadline = start + seconds
    canvas = max(task_canvas(t, network, config) for t in tasks)
    hidden = [t.without_solutions() for t in tasks]
    catalogue = PuzzleCatalogue([], hidden, config.num_aug, config.seed)

    tuned, micro_batch = _halving_on_oom(
        lambda m: _finetune(len(tasks), network, config, catalogue, canvas, m, device, dtype, deadline),
        first_micro_batch(network.config, config, canvas, device, dtype), device)
    finetune_seconds = time.perf_counter() - start
    if tuned is None:
        return [TaskOutcome.failure(t, f"out of GPU memory in fine-tuning, down to micro-batch {micro_batch}")
                for t in tasks]

    outcomes, inference_batch = [], config.inference_batch
    for k, (task, group) in enumerate(zip(tasks, catalogue.groups)):
        # Each task still to predict gets an equal share of the time left.
        task_deadline = time.perf_counter() + (deadline - time.perf_counter()) / (len(tasks) - k)
        outcome, inference_batch = _halving_on_oom(
            lambda b: _predict_task(task, group, tuned.learner, config, canvas, b, device, task_deadline),
            inference_batch, device)
        if outcome is None:
            outcome = TaskOutcome.failure(task, f"out of GPU memory in prediction, down to batch {inference_batch}")
        outcome.finetune_steps, outcome.finetune_seconds = tuned.steps, finetune_seconds
        outcome.batch, outcome.micro_batch = config.batch, micro_batch
        outcome.inference_batch, outcome.canvas = inference_batch, canvas
        outcomes.append(outcome)
    return outcomes


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


def free_memory(device: torch.device) -> None:
    """Return what the dropped tensors held: Python's cycles first, then the CUDA allocator's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class _Tuned:
    """The fine-tuning phase's result: the learner (network and puzzle rows) and its steps."""

    learner: Learner
    steps: int


def _build_model(network: Network, device: torch.device, dtype: torch.dtype) -> RecursiveModel:
    """The network every task starts from, on ``device``."""
    model = build_model(network.config, dtype=dtype)
    model.load_state_dict(network.state)
    return model.to(device)


def first_micro_batch(model_config: ModelConfig, config: FinetuneConfig, canvas: int, device: torch.device,
                      dtype: torch.dtype) -> int:
    """The micro-batch fine-tuning starts at: the configured one, or ("auto") what fits the GPU."""
    if config.micro_batch is None:
        return config.batch
    if config.micro_batch == "auto":
        return auto_micro_batch(model_config, canvas, config.batch, device, dtype)
    return min(int(config.micro_batch), config.batch)


def _finetune(num_tasks: int, network: Network, config: FinetuneConfig, catalogue: PuzzleCatalogue, canvas: int,
              micro_batch: int, device: torch.device, dtype: torch.dtype, deadline: float) -> _Tuned:
    """A fresh copy of the network, fine-tuned on the catalogue's tasks at ``config.batch`` (run
    ``micro_batch`` samples at a time) for ``config.steps`` per task, or (steps None) as long as the
    time before ``deadline`` allows once inference's share is kept back; the learning rate follows
    ``submission.schedule``."""
    world = World(rank=0, size=1, local_rank=0, device=device)
    model = _build_model(network, device, dtype)
    batch = config.batch
    optim = OptimConfig(global_batch=batch, lr=config.lr, lr_warmup_steps=config.warmup_steps,
                        weight_decay=config.weight_decay, puzzle_lr=config.puzzle_lr, ema_decay=0.0,
                        train_network=config.embedding_steps == 0, micro_batch=micro_batch)
    learner = Learner(model.config, optim, catalogue.num_ids, world, dtype, config.seed, model=model)
    learner.puzzles.weight[:] = network.puzzle_mean.to(device)
    stream = TrainStream(catalogue, DataConfig(train_sources=(), held_out_sources=(), canvas=canvas,
                                               translate=config.translate, seed=config.seed))
    slots = Slots(learner.model, batch, world, canvas)

    finetune_deadline = deadline - _inference_reserve(catalogue.groups, learner, config, canvas, device,
                                                      deadline - time.perf_counter())
    schedule = FinetuneSchedule.for_config(config, num_tasks, time.perf_counter(), finetune_deadline)
    steps = 0
    while not schedule.done(steps, time.perf_counter()):
        step_start = time.perf_counter()
        if steps == config.embedding_steps:
            learner.optim.train_network = True
        learner.lr_factor = schedule.lr_factor(steps, step_start)
        train_step(learner, slots, stream)
        steps += 1
        schedule.step_took(time.perf_counter() - step_start)
    return _Tuned(learner, steps)


def _inference_reserve(groups, learner: Learner, config: FinetuneConfig, canvas: int, device: torch.device,
                       seconds: float) -> float:
    """Seconds to keep for predicting every task's views: a few views timed on this canvas, scaled to all of them."""
    if not math.isfinite(seconds):
        return 0.0
    views = [task_views(g.task, g.table, g.first_id, min(config.views, len(g.table)), canvas) for g in groups]
    probe = views[0].inputs[:PROBE_VIEWS], views[0].puzzle_ids[:PROBE_VIEWS]
    tick = time.perf_counter()
    predict(learner.model, learner.puzzles, *probe, PROBE_VIEWS, device)
    seconds_per_view = (time.perf_counter() - tick) / max(1, len(probe[0]))
    return inference_reserve(seconds_per_view, sum(len(v.inputs) for v in views), seconds)


def _predict_task(task: Task, group, learner: Learner, config: FinetuneConfig, canvas: int, inference_batch: int,
                  device: torch.device, deadline: float) -> TaskOutcome:
    infer_start = time.perf_counter()
    views = task_views(group.task, group.table, group.first_id, min(config.views, len(group.table)), canvas)
    log_probs, q_halt = _predict_until(learner, views, inference_batch, device, deadline)
    done = len(q_halt)
    views.inputs, views.puzzle_ids = views.inputs[:done], views.puzzle_ids[:done]
    views.test_index, views.version = views.test_index[:done], views.version[:done]
    predictions = view_predictions(views, group.table, log_probs, q_halt, canvas,
                                   keep_log_probs=config.selector != "vote" or config.compare_selectors)
    ranked = _as_lists(rank_candidates(predictions, len(task.test_inputs), config.selector))
    others = SELECTORS if config.compare_selectors else {}
    ranked_by = {name: _as_lists(rank_candidates(predictions, len(task.test_inputs), name)) for name in others}
    return TaskOutcome(task.id, ranked, views=len(set(views.version)),
                       inference_seconds=time.perf_counter() - infer_start, canvas=canvas, ranked_by=ranked_by)


def _as_lists(ranked: list) -> list[list[list[list[int]]]]:
    """Candidates as plain lists (they cross process boundaries), the best ``KEEP_CANDIDATES`` of each."""
    return [[c.grid.tolist() for c in r[:KEEP_CANDIDATES]] for r in ranked]


def _predict_until(learner: Learner, views, batch: int, device: torch.device,
                   deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """Predict the views in order, a batch at a time, while the next batch still fits before the
    deadline; the first batch (which holds the identity view) always runs."""
    parts, seconds_per_batch = [], 0.0
    model = learner.model
    for begin in range(0, len(views.inputs), batch):
        if parts and time.perf_counter() + seconds_per_batch > deadline:
            break
        tick = time.perf_counter()
        parts.append(predict(model, learner.puzzles, views.inputs[begin:begin + batch],
                             views.puzzle_ids[begin:begin + batch], batch, device))
        seconds_per_batch = time.perf_counter() - tick
    if not parts:
        return np.zeros((0, views.inputs.shape[1], model.config.vocab), np.float32), np.zeros(0, np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
