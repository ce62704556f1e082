"""Test-time fine-tuning and inference settings, with presets as plain functions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pretrain.config import ModelConfig, cpu_small

# The network make_submission starts from when no --checkpoint is given: the small-arc pretraining
# preset's network (docs/BENCHMARKS.md, "Pretraining on a CPU"), a few hundred KB shipped with the code.
SHIPPED_NETWORK = Path(__file__).resolve().parent / "pretrained" / "small-arc"

# Model fields a preset may change at test time: none of them changes a tensor's shape.
TEST_TIME_MODEL_FIELDS = ("T", "n", "max_steps", "halt_exploration")
# FinetuneConfig fields that change only the prediction, never the fine-tuning (bench.inference
# compares variants of them on one fine-tuned network).
INFERENCE_FIELDS = ("views", "samples_per_view", "latent_noise", "predict_overrides", "inference_batch", "selector")


def check_inference_changes(name: str, changes: dict) -> None:
    """Raise ValueError unless ``changes`` (of the variant ``name``) touch only INFERENCE_FIELDS."""
    unknown = sorted(set(changes) - set(INFERENCE_FIELDS))
    if unknown:
        raise ValueError(f"variant {name}: {', '.join(unknown)} is not one of {', '.join(INFERENCE_FIELDS)}")


@dataclass
class FinetuneConfig:
    num_aug: int = 1000  # augmented versions of the task (identity first); also the inference views
    # Optimizer steps of fine-tuning per task (fewer only when its time share runs out first): a
    # reproducible run. None: as many steps as the time share allows (submission/schedule.py).
    steps: int | None = 200
    embedding_steps: int = 20  # of which the first train only the new puzzle rows (the network is frozen)
    batch: int = 64  # samples per optimizer step (the recipe's; out of memory never changes it)
    # Samples per forward/backward pass, gradients accumulated over the batch: "auto" as many as fit
    # the GPU's free memory (the whole batch on a CPU), an int, or None the whole batch. Running out
    # of GPU memory halves it.
    micro_batch: int | str | None = "auto"
    lr: float = 1e-4  # network learning rate
    optimizer: str = "adam-atan2"  # or "muon" for the blocks' 2-D weights (pretrain.learner.build_optimizer)
    puzzle_lr: float = 1e-2  # sign-SGD on the task's puzzle rows
    weight_decay: float = 0.1
    warmup_steps: int = 10
    # After warm-up: "constant", or "cosine" decay to lr_floor x lr at the end of the fine-tuning (the
    # fixed steps, or the time share when steps is None).
    lr_schedule: str = "constant"
    lr_floor: float = 0.1
    # 0: off. N: once N steps in a row predict every training sample exactly, the task has fitted its
    # demonstrations: fine-tuning ends after a short cool-down (schedule.FIT_COOL_DOWN), and a run
    # gives the time saved to the tasks still to run. What it did: docs/BENCHMARKS.md.
    stop_when_fitted: int = 0
    # Deep Improvement Supervision's step targets while fine-tuning (pretrain.config.OptimConfig), for a
    # network pretrained with them; needs max_steps > 1 to mean anything.
    improvement_targets: bool = False
    translate: bool = True  # random offsets of the demonstration pairs inside the canvas
    # Scale augmentation (VARC): each augmented version upscaled by a factor drawn from 1..max_scale,
    # capped where the task would leave its canvas; predictions are mapped back by downscaling.
    # 1: off. What it did: docs/BENCHMARKS.md.
    max_scale: int = 1
    views: int = 1000  # augmented views predicted per test input (capped by num_aug and by time)
    inference_batch: int = 256
    # Inference only (the fine-tuning is unchanged): predict each view this many times, each a vote,
    # with Gaussian noise of std latent_noise added to the latent after each recursion (PTRM, arXiv
    # 2605.19943; the states have unit RMS per token); and test-time model settings used only while
    # predicting, e.g. {"max_steps": 2} (TEST_TIME_MODEL_FIELDS). What they did: docs/BENCHMARKS.md.
    samples_per_view: int = 1
    latent_noise: float = 0.0
    predict_overrides: dict[str, Any] = field(default_factory=dict)
    # How the candidates are ranked: a name of augment.voting.RANK_KEYS, e.g. "poe" (product of
    # experts over views) or "vote" (TRM's rule). Which wins depends on the tasks
    # (docs/BENCHMARKS.md, "Tuning the `cpu` preset"); the cpu and kaggle-nvarc presets vote.
    selector: str = "poe"
    compare_selectors: bool = False  # also rank with every other selector (for measuring them)
    keep_evidence: bool = False  # keep every candidate's evidence (votes, confidences, per-view log-probabilities)
    # torch.compile the network (compiled once per shape per worker, off the tasks' clocks); None: on
    # CUDA, and on a CPU for runs of at least CPU_COMPILE_MIN_SECONDS (``compile_for_run``)
    compile: bool | None = None
    bucket_canvas: bool = True  # run each task at the smallest canvas of data.CANVAS_BUCKETS that holds it
    max_task_seconds: float = 600.0  # cap on any one task's share of the time (a guard for huge time limits)
    shard_tasks: int = 1  # 1: per-task fine-tuning; N > 1: one network fine-tuned jointly on N tasks
    shard_per_worker: bool = False  # True: the tasks split evenly over the workers, one joint network each
    # Test-time model settings applied to the network before fine-tuning, e.g. {"T": 4, "max_steps": 10}
    # (only TEST_TIME_MODEL_FIELDS: the weights keep their shapes).
    model_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("model_overrides", "predict_overrides"):
            unknown = sorted(set(getattr(self, name)) - set(TEST_TIME_MODEL_FIELDS))
            if unknown:
                raise ValueError(f"{name} may only change {', '.join(TEST_TIME_MODEL_FIELDS)}, got {unknown}")
        if self.samples_per_view < 1:
            raise ValueError(f"samples_per_view must be at least 1, got {self.samples_per_view}")
        if self.latent_noise < 0:
            raise ValueError(f"latent_noise must not be negative, got {self.latent_noise}")
        if self.stop_when_fitted < 0:
            raise ValueError(f"stop_when_fitted must not be negative, got {self.stop_when_fitted}")
        if self.max_scale < 1:
            raise ValueError(f"max_scale must be at least 1, got {self.max_scale}")

    def shard_size(self, tasks: int, workers: int) -> int:
        """Tasks per jointly fine-tuned network."""
        return max(1, math.ceil(tasks / max(1, workers))) if self.shard_per_worker else self.shard_tasks

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# A CPU worker compiles each canvas in about 18 s and then fine-tunes about 1.3x more steps per second
# (docs/BENCHMARKS.md, "The CPU step"): worth it once a run gives each worker several minutes.
CPU_COMPILE_MIN_SECONDS = 300.0


def compile_for_run(config: FinetuneConfig, device_type: str, seconds: float) -> FinetuneConfig:
    """``config`` with ``compile`` settled for a run of ``seconds`` on workers of ``device_type``:
    a preset's explicit choice stands; None compiles on CUDA, and on a CPU when the run is long
    enough for the compile to pay for itself."""
    if config.compile is not None:
        return config
    return dataclasses.replace(config, compile=device_type == "cuda" or seconds >= CPU_COMPILE_MIN_SECONDS)


def fresh_model_config() -> ModelConfig:
    """The network fine-tuned from scratch (``make_submission.py --fresh``): the same network the
    ``small-arc`` pretraining preset trains, so the two compare at equal test-time cost."""
    return cpu_small()


def cpu() -> FinetuneConfig:
    """A 2-core laptop without a GPU: each task fine-tunes for the whole time share it gets (the time
    limit is the knob), the learning rate decaying over that share; inference keeps what it needs.

    Tuned on ARC-AGI-1 training tasks within 8x8: 32 augmentations without translation, batch 32,
    lr 1e-3, and the vote with ties broken by the product of experts (``vote-poe``: paired, it won on
    the tuning tasks and on both evaluation sets, where this network's halting confidence, TRM's
    tie-break, ranks poorly). What it scores, from the shipped network and fresh, is in
    docs/BENCHMARKS.md."""
    return FinetuneConfig(num_aug=32, steps=None, embedding_steps=0, batch=32, lr=1e-3, puzzle_lr=1e-2,
                          warmup_steps=5, lr_schedule="cosine", translate=False, views=32, inference_batch=64,
                          selector="vote-poe", max_task_seconds=600.0)


def kaggle_4xl4() -> FinetuneConfig:
    """Kaggle's 4x L4 machine, 240 hidden tasks in 12 hours: about 11 minutes of one L4 per task."""
    return FinetuneConfig(num_aug=1000, steps=400, embedding_steps=40, batch=128, lr=1e-4, views=500,
                          inference_batch=256, max_task_seconds=900.0)


def kaggle_nvarc() -> FinetuneConfig:
    """NVARC's test-time recipe (10.0 on the ARC-AGI-2 public leaderboard, the best published TRM score),
    spread over the workers as docs/KAGGLE.md argues.

    NVARC fine-tuned every hidden task jointly, data-parallel over 4 L4s at global batch 128 (32 per
    GPU), lr 1e-4, 200 warm-up steps, 128 augmentations per task, new puzzle rows at the mean row,
    with H_cycles=4 halt_max_steps=10 and count voting. Here each worker fine-tunes one network on its
    quarter of the tasks at batch 32: per network, the same optimizer steps, learning rate and warm-up
    as NVARC's run, each task's puzzle rows in as many steps, and a GPU's share of the work.
    ``steps``: NVARC's 4,000 epochs of the official data loader (one augmented version of every task
    per epoch, each with all its demonstration pairs: about 3 on ARC-AGI-2) at 32 samples per step,
    4000 x 3 / 32 = 375 optimizer steps per task, until the step count follows the time share.
    """
    return FinetuneConfig(num_aug=128, steps=375, embedding_steps=0, batch=32, lr=1e-4, puzzle_lr=1e-2,
                          weight_decay=0.1, warmup_steps=200, views=128, inference_batch=256, selector="vote",
                          max_task_seconds=900.0, shard_per_worker=True, model_overrides={"T": 4, "max_steps": 10})


def kaggle_mcgovern() -> FinetuneConfig:
    """McGovern's recipe (arXiv 2511.02886: 6.67 semi-private) as far as it maps here: full fine-tuning
    from the first step, lr 2e-4 for the network and 2e-2 for the puzzle rows, 512 views, all tasks
    jointly (one network per worker). His batch of 384 does not fit one L4 (docs/KAGGLE.md): 64.
    ``steps``: his 12,500 steps x 384 samples, if spread over 240 tasks, are 20,000 samples per task,
    312 steps of 64. The warm-up (200 steps) and the selector (poe) are this project's choices.
    """
    return FinetuneConfig(num_aug=512, steps=312, embedding_steps=0, batch=64, lr=2e-4, puzzle_lr=2e-2,
                          weight_decay=0.1, warmup_steps=200, views=512, inference_batch=256,
                          max_task_seconds=900.0, shard_per_worker=True)


def one_gpu() -> FinetuneConfig:
    """One GPU, for the ``one-gpu`` pretraining preset's network on an evaluation split: NVARC's
    test-time recipe (``kaggle_nvarc``: every task of the worker fine-tuned jointly, 128 augmentations,
    lr 1e-4, 200 warm-up steps, votes) at the network's own cycles. The inference options measured at
    CPU scale did not win on the evaluation tasks, so none is on (docs/BENCHMARKS.md, "Ingredients,
    paired"). Not yet run on a GPU."""
    return dataclasses.replace(kaggle_nvarc(), model_overrides={})


def kaggle_placeholder() -> FinetuneConfig:
    """The visible placeholder test file (not the rerun): a short run that proves the notebook works."""
    return FinetuneConfig(num_aug=32, steps=10, embedding_steps=2, batch=32, views=16, max_task_seconds=30.0)


def synthetic() -> FinetuneConfig:
    """What a fresh network needs on a CPU to solve the synthetic colour-map and tiling tasks
    (the slow proof-of-life test): longer fine-tuning, no translation, 32 views."""
    return FinetuneConfig(num_aug=32, steps=800, embedding_steps=0, batch=32, lr=1e-3, warmup_steps=10,
                          translate=False, views=32, inference_batch=64, max_task_seconds=600.0)


# The presets make_submission runs on Kaggle when given none: the scored rerun's, and the visible
# placeholder run's (a short proof that the notebook works).
KAGGLE_RERUN_PRESET = "kaggle-nvarc"
KAGGLE_VISIBLE_PRESET = "kaggle-placeholder"

FINETUNE_PRESETS: dict[str, Callable[[], FinetuneConfig]] = {
    "cpu": cpu, "kaggle-4xl4": kaggle_4xl4, "kaggle-nvarc": kaggle_nvarc, "kaggle-mcgovern": kaggle_mcgovern,
    "kaggle-placeholder": kaggle_placeholder, "synthetic": synthetic, "one-gpu": one_gpu,
}
