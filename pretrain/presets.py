"""Run presets as plain functions: a model, its data, its optimizer and the run's length.

``tiny`` is for CPU tests and debugging; ``small-arc`` pretrains the CPU network on the training
splits' small tasks on a 2-core CPU (the shipped run took three hours; the compiled step with oneDNN
products now does twice its steps in less than two); the ``trm-*`` and ``hrm-*`` presets reproduce
the papers' runs (global batch 768, lr 1e-4, 2000 warm-up steps, EMA 0.999, 1000 augmentations per task).
They run the batch in micro-batches chosen to fit the device (``micro_batch="auto"``: the whole batch
on a CPU), so the paper's 768 trains on one GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from pretrain import config as model_presets
from pretrain.config import DataConfig, ModelConfig, OptimConfig


@dataclass
class RunConfig:
    name: str  # preset name; also the default run folder under runs/
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(micro_batch="auto"))
    steps: int = 518_000  # optimizer steps (each one supervision step of the whole batch)
    log_every: int = 100  # steps between metric lines
    eval_every: int = 10_000  # steps between held-out evaluations (0: only at the end)
    eval_views: int = 8  # augmented views per held-out test input in periodic evaluation
    eval_batch: int = 256  # inference batch size
    checkpoint_every: int = 2_000  # steps between checkpoints
    seed: int = 0  # network initialisation and halting exploration
    compile: bool | None = None  # torch.compile the supervision step; None: on CUDA, not on a CPU
    puzzle_storage: str = "device"  # where the puzzle table lives: "device" or "host" (pinned; see puzzle_embedding.py)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        saved = d.pop("data", {})  # sources come back from JSON as lists
        data = DataConfig(**{k: tuple(v) if k.endswith("_sources") else v for k, v in saved.items()})
        return cls(model=ModelConfig.from_dict(d.pop("model")), data=data, optim=OptimConfig(**d.pop("optim")), **d)


ARC1 = DataConfig(train_sources=("bundled:arc-agi-1/train",), held_out_sources=("bundled:arc-agi-1/eval",))
ARC2 = DataConfig(train_sources=("bundled:arc-agi-2/train",), held_out_sources=("bundled:arc-agi-2/eval",))


def tiny() -> RunConfig:
    """CPU-sized: synthetic flips, colour maps and tilings on a 10x10 canvas, two supervision steps and
    no translation (both slow a model this small down several-fold; measured, see docs/BENCHMARKS.md)."""
    families = "flip_lr+colour_map+tile"
    return RunConfig(
        name="tiny", model=model_presets.tiny().replace(max_steps=2),
        data=DataConfig(train_sources=(f"synthetic:60/0/{families}",), held_out_sources=(f"synthetic:15/1/{families}",),
                        num_aug=8, canvas=10, translate=False),
        optim=OptimConfig(global_batch=32, lr=1e-3, lr_warmup_steps=20, ema_decay=0.99),
        steps=6000, log_every=100, eval_every=2000, eval_views=8, eval_batch=64, checkpoint_every=1000)


# The small-arc run: ARC tasks within SMALL_SIDE x SMALL_SIDE; part 0 of 8 of ARC-AGI-1's training tasks
# (by a hash of the id) is held out: its demonstrations train, its test pairs are evaluated during the run.
SMALL_SIDE = 10
SMALL_HELD_OUT_PART = "0/8"
# Evaluated after pretraining (the small-arc benchmark and the bundled ARC-AGI-2 evaluation): refused
# as pretraining data, by id and by content.
SMALL_EVALUATED = ("bundled:arc-agi-1/eval", "bundled:arc-agi-2/eval")


def training_splits_data(num_aug: int, max_side: int | None = None) -> DataConfig:
    """ARC-AGI-1 training + ARC-AGI-2 training minus ARC-AGI-1 evaluation (it holds 376 of those 400 tasks)
    and minus ARC-AGI-1 training (the same tasks again), optionally only the tasks within max_side x
    max_side; part 0 of 8 of ARC-AGI-1's training tasks held out; each task on the smallest canvas
    that holds it. The evaluation splits are refused as pretraining data."""
    small, held = (f",max-side={max_side}" if max_side else ""), SMALL_HELD_OUT_PART
    arc1 = f"bundled:arc-agi-1/train{small},minus=bundled:arc-agi-1/eval"
    arc2 = f"bundled:arc-agi-2/train{small},minus=bundled:arc-agi-1/eval,minus=bundled:arc-agi-1/train"
    return DataConfig(train_sources=(f"{arc1},not-part={held}", f"{arc2},not-part={held}"),
                      held_out_sources=(f"{arc1},part={held}",), evaluated_sources=SMALL_EVALUATED,
                      num_aug=num_aug, translate=True, canvas=30, bucket_canvas=True)


def small_arc_data() -> DataConfig:
    """The training splits' tasks within 10x10, bucketed to 8x8 and 12x12 canvases."""
    return training_splits_data(num_aug=64, max_side=SMALL_SIDE)


def small_arc() -> RunConfig:
    """A 2-core CPU: the network that ``make_submission.py --fresh`` fine-tunes
    (``cpu_small``: 2-D RoPE, one supervision step), pretrained on the training splits' small tasks, so
    that fresh and pretrained compare at the same test-time cost. Export it and pass it as
    ``--checkpoint``; its run ships as make_submission's default start.

    20,000 steps, the last 6,000 cooling the learning rate linearly to zero, on two torchrun ranks of
    one thread each; its time and curves are in docs/BENCHMARKS.md ("Pretraining on a CPU"): 186 min
    eager. Compiled, with oneDNN products: about 20 s per canvas once, then 422 sample-steps/s (a
    40,000-step run with Muon took 106 min, docs/BENCHMARKS.md, "A second small-arc network")."""
    return RunConfig(
        name="small-arc", model=model_presets.cpu_small(), data=small_arc_data(),
        optim=OptimConfig(global_batch=64, lr=1e-3, lr_warmup_steps=200, lr_cooldown_steps=6_000, ema_decay=0.999),
        steps=20_000, log_every=100, eval_every=2_000, eval_views=8, eval_batch=128, checkpoint_every=1_000,
        compile=True)


def one_gpu() -> RunConfig:
    """About one day of one H100, sized but not yet run on a GPU: TRM-Att (6.8M parameters) with 2-D
    RoPE so that every task trains on the smallest canvas that holds it, on the training splits only
    (no evaluation task, not even its demonstrations), the official optimizer settings but Muon for
    the blocks' matrices (at CPU scale it reached a lower pretraining loss at the same steps and
    speed; docs/BENCHMARKS.md, "Ingredients, paired"), and the learning rate cooled to zero over the
    last 10,000 steps (the cool-down brought small-arc's loss from 0.65 to 0.49).

    43,000 steps of 768 samples: the official ARC-AGI-1 run's 518,000 steps took about 12 H100-days,
    so one H100-day is about 43,000 at the full 30x30 canvas; bucketed canvases make most steps
    cheaper, so the run should take less than a day. Pair it with the ``one-gpu`` fine-tuning preset. Measured
    only at CPU scale (docs/BENCHMARKS.md, "Ingredients, paired") until a GPU run says more."""
    return RunConfig(
        name="one-gpu", model=model_presets.trm_att().replace(pos_encoding="rope2d"),
        data=training_splits_data(num_aug=1000),
        optim=OptimConfig(global_batch=768, lr=1e-4, optimizer="muon", lr_warmup_steps=2000,
                          lr_cooldown_steps=10_000, micro_batch="auto"),
        steps=43_000, eval_every=5_000, checkpoint_every=1_000)


def trm_arc1() -> RunConfig:
    return RunConfig(name="trm-arc1", model=model_presets.trm_att(), data=ARC1)


def trm_arc2() -> RunConfig:
    return RunConfig(name="trm-arc2", model=model_presets.trm_att(), data=ARC2)


def trm_mlp_arc1() -> RunConfig:
    return RunConfig(name="trm-mlp-arc1", model=model_presets.trm_mlp(), data=ARC1)


def hrm_arc1() -> RunConfig:
    return RunConfig(name="hrm-arc1", model=model_presets.hrm(), data=ARC1)


RUN_PRESETS: dict[str, Callable[[], RunConfig]] = {
    "tiny": tiny, "small-arc": small_arc, "trm-arc1": trm_arc1, "trm-arc2": trm_arc2, "trm-mlp-arc1": trm_mlp_arc1,
    "hrm-arc1": hrm_arc1, "one-gpu": one_gpu,
}
