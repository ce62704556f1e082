"""Test-time fine-tuning and inference settings, with presets as plain functions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from pretrain.config import ModelConfig, cpu_small

@dataclass
class FinetuneConfig:
    num_aug: int = 1000  # augmented versions of the task (identity first); also the inference views
    # Optimizer steps of fine-tuning per task (fewer only when its time share runs out first): a
    # reproducible run. None: as many steps as the time share allows (submission/schedule.py).
    steps: int | None = 200
    embedding_steps: int = 20  # of which the first train only the new puzzle rows (the network is frozen)
    batch: int = 64  # samples per optimizer step
    lr: float = 1e-4  # network learning rate
    puzzle_lr: float = 1e-2  # sign-SGD on the task's puzzle rows
    weight_decay: float = 0.1
    warmup_steps: int = 10
    # After warm-up: "constant", or "cosine" decay to lr_floor x lr at the end of the fine-tuning (the
    # fixed steps, or the time share when steps is None).
    lr_schedule: str = "constant"
    lr_floor: float = 0.1
    translate: bool = True  # random offsets of the demonstration pairs inside the canvas
    views: int = 1000  # augmented views predicted per test input (capped by num_aug and by time)
    inference_batch: int = 256
    # "poe" (product of experts over views) or "vote" (TRM's rule). poe measured as good or better
    # (docs/BENCHMARKS.md: 50% vs 50% and 50% vs 25% pass@2 on synthetic tasks; a small sample).
    selector: str = "poe"
    compare_selectors: bool = False  # also rank with every other selector (for measuring them)
    bucket_canvas: bool = True  # run each task at the smallest canvas of data.CANVAS_BUCKETS that holds it
    max_task_seconds: float = 600.0  # cap on any one task's share of the time (a guard for huge time limits)
    shard_tasks: int = 1  # 1: per-task fine-tuning; N > 1: one network fine-tuned jointly on N tasks
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fresh_model_config() -> ModelConfig:
    """The network fine-tuned from scratch when no checkpoint is given (a fresh CPU machine): the same
    network the ``small-arc`` pretraining preset trains, so the two compare at equal test-time cost."""
    return cpu_small()


def cpu() -> FinetuneConfig:
    """A 2-core laptop without a GPU: each task fine-tunes for the whole time share it gets (the time
    limit is the knob), the learning rate decaying over that share; inference keeps what it needs."""
    return FinetuneConfig(num_aug=16, steps=None, embedding_steps=5, batch=16, lr=3e-3, puzzle_lr=1e-2,
                          warmup_steps=5, lr_schedule="cosine", views=16, inference_batch=64,
                          max_task_seconds=600.0)


def kaggle_4xl4() -> FinetuneConfig:
    """Kaggle's 4x L4 machine, 240 hidden tasks in 12 hours: about 11 minutes of one L4 per task."""
    return FinetuneConfig(num_aug=1000, steps=400, embedding_steps=40, batch=128, lr=1e-4, views=500,
                          inference_batch=256, max_task_seconds=900.0)


def kaggle_placeholder() -> FinetuneConfig:
    """The visible placeholder test file (not the rerun): a short run that proves the notebook works."""
    return FinetuneConfig(num_aug=32, steps=10, embedding_steps=2, batch=32, views=16, max_task_seconds=30.0)


def synthetic() -> FinetuneConfig:
    """What a fresh network needs on a CPU to solve the synthetic colour-map and tiling tasks
    (the slow proof-of-life test): longer fine-tuning, no translation, 32 views."""
    return FinetuneConfig(num_aug=32, steps=800, embedding_steps=0, batch=32, lr=1e-3, warmup_steps=10,
                          translate=False, views=32, inference_batch=64, max_task_seconds=600.0)


PRESETS: dict[str, Callable[[], FinetuneConfig]] = {
    "cpu": cpu, "kaggle-4xl4": kaggle_4xl4, "kaggle-placeholder": kaggle_placeholder, "synthetic": synthetic,
}
