"""The pretraining loop: one process or many under torchrun, resumable, with metrics and curves.

    run = Trainer(config, out_dir, world); run.train()

Per step: ``train_step`` (refill slots, one supervision step, optimizer and puzzle updates, EMA);
a step that runs out of GPU memory runs again at half the micro-batch (one line says so), down to 1.
Every ``log_every`` steps rank 0 appends a JSON line to ``metrics.jsonl``; every ``eval_every`` steps
it evaluates pass@K on the held-out test inputs with the EMA network; every ``checkpoint_every``
steps all ranks save a checkpoint. ``curves.png`` is redrawn at each evaluation and at the end.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import torch

from arc_data.progress import progress
from pretrain import checkpoint
from pretrain.data import PuzzleCatalogue, TrainStream
from pretrain.distributed import World, default_dtype
from pretrain.evaluation import pass_at_sums
from pretrain.learner import Learner, Slots, train_step
from pretrain.losses import summarize_metrics
from pretrain.model import Carry, count_parameters
from pretrain.plots import plot_curves
from pretrain.presets import RunConfig

EVAL_KS = (1, 2, 10, 100)  # pass@k reported by the periodic evaluation


class Trainer:
    def __init__(self, config: RunConfig, out_dir: Path, world: World, dtype: torch.dtype | None = None,
                 catalogue: PuzzleCatalogue | None = None):
        if config.optim.global_batch % world.size:
            raise ValueError(f"global batch {config.optim.global_batch} is not divisible by {world.size} ranks")
        if config.data.canvas != config.model.canvas:
            raise ValueError(f"data canvas {config.data.canvas} differs from the model's {config.model.canvas}")
        if config.data.bucket_canvas and config.model.pos_encoding != "rope2d":
            raise ValueError("canvas bucketing needs pos_encoding rope2d (positions that mean the same on every canvas)")
        self.config, self.out_dir, self.world = config, Path(out_dir), world
        self.dtype = dtype or default_dtype(world.device)
        self.catalogue = catalogue or PuzzleCatalogue.from_config(config.data)
        self.learner = Learner(config.model, config.optim, self.catalogue.num_ids, world, self.dtype, config.seed,
                               compile=config.compile, puzzle_storage=config.puzzle_storage)
        # One stream and one set of batch slots per canvas (a single one without bucketing).
        bucketed = config.data.bucket_canvas
        self.canvases = self.catalogue.canvases() if bucketed else [config.data.canvas]
        self.streams = {c: TrainStream(self.catalogue, config.data, canvas=c if bucketed else None) for c in self.canvases}
        local_batch = config.optim.global_batch // world.size
        self.slots = {c: self.learner.new_slots(local_batch, c) for c in self.canvases}
        pairs = np.array([sum(len(g.pair_inputs) for g in self.catalogue.groups if not bucketed or g.canvas == c)
                          for c in self.canvases], dtype=np.float64)
        self.canvas_weights = pairs / pairs.sum()
        self.metrics_path = self.out_dir / "metrics.jsonl"

    # -- checkpoints -----------------------------------------------------------------------

    def save(self) -> None:
        self.world.barrier()
        if self.world.is_main:
            positions = {c: stream.consumed for c, stream in self.streams.items()}
            checkpoint.save_atomic({"learner": self.learner.state_dict(), "stream_positions": positions,
                                    "config": self.config.to_dict()}, self.out_dir / checkpoint.SHARED)
        slots = {c: {"inputs": s.inputs, "labels": s.labels, "puzzle_ids": s.puzzle_ids, "steps": s.steps,
                     "halted": s.halted, "carry_y": s.carry.y, "carry_z": s.carry.z, **_reveal_state(s)}
                 for c, s in self.slots.items()}
        checkpoint.save_atomic({"slots": slots, "step": self.learner.step},
                               self.out_dir / checkpoint.rank_file(self.world.rank))
        self.world.barrier()

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint when there is one; returns whether it did."""
        if not checkpoint.has_checkpoint(self.out_dir):
            return False
        shared = checkpoint.load(self.out_dir / checkpoint.SHARED)
        self.learner.load_state_dict(shared["learner"])
        bucketed = self.config.data.bucket_canvas
        self.streams = {c: TrainStream(self.catalogue, self.config.data, position=shared["stream_positions"][c],
                                       canvas=c if bucketed else None) for c in self.canvases}
        mine = checkpoint.load(self.out_dir / checkpoint.rank_file(self.world.rank))
        if mine["step"] != self.learner.step:
            raise RuntimeError(f"{self.out_dir}: rank {self.world.rank} slots are from step {mine['step']}, "
                               f"the checkpoint from step {self.learner.step}")
        device = self.world.device
        # The carry in this run's compute dtype: one saved by an fp32 run must not keep a bf16 run in fp32.
        dtype = self.learner.model.compute_dtype
        for c, saved in mine["slots"].items():
            slots = self.slots[c]
            for name in ("inputs", "labels", "puzzle_ids", "steps", "halted"):
                setattr(slots, name, saved[name].to(device))
            slots.carry = Carry(saved["carry_y"].to(device, dtype), saved["carry_z"].to(device, dtype))
            _load_reveal_state(slots, saved, self.out_dir)
        return True

    # -- the loop ----------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "ab") as f:
                f.write(orjson.dumps(record) + b"\n")

    def evaluate(self) -> dict[str, float]:
        """Held-out pass@K with the EMA network. Every rank scores its share of the tasks and the sums
        are added up, so no rank waits on another's whole evaluation (a collective timeout)."""
        cfg, world = self.config, self.world
        canvas = None if cfg.data.bucket_canvas else cfg.data.canvas  # None: each group's own canvas
        mine = self.catalogue.held_out_groups()[world.rank::world.size]
        sums, tasks = pass_at_sums(self.learner.eval_model(), self.learner.puzzles, mine, cfg.eval_views, canvas,
                                   cfg.eval_batch, world.device, ks=EVAL_KS)
        totals = world.all_reduce_sum(torch.tensor([*sums, tasks], dtype=torch.float64, device=world.device))
        tasks = int(totals[-1])
        if not world.is_main or tasks == 0:
            return {}
        return {f"pass@{k}": float(total) / tasks for k, total in zip(EVAL_KS, totals[:-1])} | {"eval_tasks": tasks}

    def train(self, steps: int | None = None) -> dict[str, float]:
        """Train until ``steps`` (default: the config's) optimizer steps; returns the last metrics."""
        cfg, learner = self.config, self.learner
        total = steps if steps is not None else cfg.steps
        if self.world.is_main:
            print(f"{cfg.name}: {count_parameters(learner.model):,} parameters, {self.catalogue.num_ids:,} puzzle ids, "
                  f"{len(self.catalogue.groups)} task groups, {self.world.size} rank(s) on {self.world.device}, "
                  f"{self.dtype}; step {learner.step} of {total}")
        sums, window_start, last, self._window_tokens = None, time.perf_counter(), {}, 0
        self._reported_canvases: set[int] = set()
        bar = progress(total=total, initial=learner.step, disable=not self.world.is_main, desc="train", mininterval=5)
        with bar:  # closed however the loop ends, so an error message starts on a line of its own
            while learner.step < total:
                canvas = self._canvas_for_step(learner.step)
                learner.lr_factor = learner.run_lr_factor(total)
                step_sums = train_step(learner, self.slots[canvas], self.streams[canvas], halve_on_oom=True)
                self._report_micro_batch(canvas)
                self._window_tokens += cfg.optim.global_batch * (cfg.model.prefix_tokens + canvas * canvas)
                sums = step_sums if sums is None else {k: sums[k] + v for k, v in step_sums.items()}
                bar.update(1)
                if learner.step % cfg.log_every == 0 or learner.step == total:
                    seconds = time.perf_counter() - window_start
                    steps_done = cfg.log_every if learner.step % cfg.log_every == 0 else learner.step % cfg.log_every
                    last = self._record(sums, steps_done, seconds)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", exact=f"{last['exact_accuracy']:.3f}")
                    sums, window_start, self._window_tokens = None, time.perf_counter(), 0
                if cfg.eval_every and learner.step % cfg.eval_every == 0 or learner.step == total:
                    last |= self._evaluate_and_plot()
                if learner.step % cfg.checkpoint_every == 0 or learner.step == total:
                    self.save()
        return last

    def _report_micro_batch(self, canvas: int) -> None:
        """Say once per canvas how the local batch is split into micro-batches, when it is."""
        if canvas in self._reported_canvases:
            return
        self._reported_canvases.add(canvas)
        local = self.slots[canvas].local_batch
        micro = self.learner.micro_batch_size(canvas, local)
        if self.world.is_main and micro < local:
            print(f"canvas {canvas}: micro-batches of {micro} (local batch {local}, "
                  f"{-(-local // micro)} forward/backward passes per step)", flush=True)

    def _canvas_for_step(self, step: int) -> int:
        """Which canvas's slots this step trains, drawn alike on every rank, in proportion to the
        training pairs on each canvas."""
        if len(self.canvases) == 1:
            return self.canvases[0]
        rng = np.random.default_rng([self.config.seed, step])
        return int(rng.choice(self.canvases, p=self.canvas_weights))

    def _record(self, sums: dict, steps: int, seconds: float) -> dict[str, float]:
        batch = self.config.optim.global_batch
        record = summarize_metrics(sums, batch * steps)
        record["loss"] = float(sums["loss"]) / (batch * steps)
        record |= {"step": self.learner.step, "lr": self.config.optim.lr * self.learner.step_lr_factor(),
                   "sample_steps_per_s": batch * steps / seconds,
                   "tokens_per_s": self._window_tokens / seconds,
                   "samples_seen": sum(stream.consumed for stream in self.streams.values())}
        self.log(record)
        return record

    def _evaluate_and_plot(self) -> dict[str, float]:
        scores = self.evaluate()
        if scores:
            self.log({"step": self.learner.step, **{f"eval/{k}": v for k, v in scores.items()}})
        if self.world.is_main and self.metrics_path.exists():
            plot_curves(self.metrics_path, self.out_dir / "curves.png")
        return {f"eval/{k}": v for k, v in scores.items()}


def _reveal_state(slots: Slots) -> dict:
    """Deep Improvement Supervision's per-cell draws and their generator, when the run has them."""
    if slots.reveal is None:
        return {}
    return {"reveal": slots.reveal, "reveal_generator": slots.reveal_generator.get_state()}


def _load_reveal_state(slots: Slots, saved: dict, out_dir: Path) -> None:
    if slots.reveal is None:
        return
    if "reveal" not in saved:
        raise ValueError(f"{out_dir}: the checkpoint was trained without improvement targets; "
                         "resume it without them, or start a new run")
    slots.reveal = saved["reveal"].to(slots.reveal.device)
    slots.reveal_generator.set_state(saved["reveal_generator"])
