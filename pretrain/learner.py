"""The single training step shared by pretraining and test-time fine-tuning.

``Learner`` holds everything that learns (network, EMA copy, AdamATan2 state, puzzle table, step
count); ``Slots`` holds the persistent batch (each slot: a sample, its carry, its step count);
``train_step`` runs one supervision step on every slot, one optimizer step, and refills the slots
whose samples halted with fresh samples from a stream.

Deep supervision as in TRM: a sample stays in its slot for up to ``max_steps`` optimizer steps,
its carry detached between them, until it halts; then the slot gets the next sample of the stream.

Micro-batches: the slots go through forward and backward ``micro_batch`` at a time and the
gradients add up (the loss is already divided by the global batch), so one optimizer step sees the
gradient of the whole batch. Halting, its exploration draws, the puzzle rows' sign-SGD and the
metrics are formed once for the whole batch, so every result is that of the full batch up to float
rounding; only the memory a step needs changes. The slots' carry is written once every micro-batch
has run, so a step that runs out of GPU memory part-way can run again, at half the micro-batch, from
the carry it started with (``train_step(..., halve_on_oom=True)``, as pretraining does).
"""

from __future__ import annotations

import copy
import gc
from typing import Protocol

import numpy as np
import torch
from adam_atan2_pytorch import AdamAtan2
from torch import Tensor

from pretrain.config import ModelConfig, OptimConfig
from pretrain.data import SampleBatch
from pretrain.distributed import World
from pretrain.losses import StepTerms, act_loss_terms, act_metrics, improvement_targets, q_continue_target
from pretrain.memory import auto_micro_batch
from pretrain.model import Carry, Reasoner, RecursiveModel, build_model, halt_decision
from pretrain.puzzle_embedding import PuzzleEmbedding


# Tells the reveal draws' seed apart from the halting draws' (both derive from the learner's seed).
_REVEAL_STREAM = 1


class SampleSource(Protocol):
    def take(self, n: int) -> SampleBatch: ...


class Optimizers:
    """Several optimizers over disjoint parameters, stepped as one (their param_groups side by side)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


def build_optimizer(model: RecursiveModel, optim: OptimConfig) -> torch.optim.Optimizer | Optimizers:
    """The network's optimizer. AdamATan2 with a = b = 1: the update is exactly atan2(m_hat, sqrt(v_hat)),
    no epsilon. With ``optim.optimizer == "muon"``, the 2-D weights of the recursive blocks go to
    torch.optim.Muon (orthogonalised momentum; adjust_lr_fn="match_rms_adamw" gives its step AdamW's
    RMS, so the same lr serves both) and the embeddings, heads and biases stay with AdamATan2."""
    def adam(params) -> AdamAtan2:
        return AdamAtan2(params, lr=optim.lr, betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay,
                         a=1.0, b=1.0)

    if optim.optimizer == "adam-atan2":
        return adam(model.parameters())
    matrices = [p for module in model.modules() if isinstance(module, Reasoner) for p in module.parameters()
                if p.ndim == 2]
    chosen = {id(p) for p in matrices}
    others = [p for p in model.parameters() if id(p) not in chosen]
    muon = torch.optim.Muon(matrices, lr=optim.lr, weight_decay=optim.weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers(muon, adam(others))


class Learner:
    """Network, EMA, optimizer, puzzle table and step: what a checkpoint saves and a step updates."""

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, num_puzzle_ids: int, world: World,
                 dtype: torch.dtype, seed: int = 0, model: RecursiveModel | None = None,
                 compile: bool | None = None, puzzle_storage: str = "device"):
        """``compile``: torch.compile the network's supervision step (and the EMA's); None: on CUDA.
        ``puzzle_storage``: where the puzzle table lives, see ``PuzzleEmbedding``."""
        self.model_config, self.optim, self.world, self.dtype, self.seed = model_config, optim, world, dtype, seed
        self.model = model if model is not None else build_model(model_config, dtype, seed, world.device)
        self.model.activation_checkpointing = optim.activation_checkpointing
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if optim.ema_decay > 0 else None
        if compile is None:
            compile = world.device.type == "cuda"  # compiled on GPUs, eager on a CPU
        if compile:
            self.model.compile_step()
            if self.ema is not None:
                self.ema.compile_step()
        self.optimizer = build_optimizer(self.model, optim)
        self.puzzles = PuzzleEmbedding(num_puzzle_ids, model_config.puzzle_dim, world.device, puzzle_storage)
        self.step = 0
        # The next step's learning-rate factor (network and puzzle rows), set by a caller that schedules
        # it (test-time fine-tuning, submission/schedule.py); None: the warm-up factor.
        self.lr_factor: float | None = None
        # Halting exploration draws: the same generator on every rank, each rank using its slice.
        self.halt_generator = torch.Generator(world.device).manual_seed(seed)
        # (canvas, local batch) -> the micro-batch measured ("auto") or halved after running out of memory
        self._micro_batches: dict[tuple[int, int], int] = {}

    def micro_batch_size(self, side: int, batch: int) -> int:
        """Samples per forward/backward pass for ``batch`` slots on a side x side canvas."""
        setting, key = self.optim.micro_batch, (side, batch)
        if setting == "auto":
            if key not in self._micro_batches:
                self._micro_batches[key] = auto_micro_batch(
                    self.model_config, side, batch, self.world.device, self.dtype,
                    activation_checkpointing=self.optim.activation_checkpointing)
            return self._micro_batches[key]
        configured = batch if setting is None else min(int(setting), batch)
        return min(configured, self._micro_batches.get(key, batch))

    def halve_micro_batch(self, side: int, batch: int) -> int:
        """Remember half the current micro-batch for ``batch`` slots on this canvas; returns it.
        Raises MemoryError when it is already 1 (nothing smaller to try)."""
        micro = self.micro_batch_size(side, batch)
        if micro == 1:
            raise MemoryError(f"out of GPU memory at micro-batch 1 on canvas {side} (local batch {batch}): "
                              "not even one sample's step fits the device")
        self._micro_batches[(side, batch)] = micro // 2
        print(f"rank {self.world.rank}: out of GPU memory at micro-batch {micro} on canvas {side}; "
              f"going on at {micro // 2}", flush=True)
        return micro // 2

    def warmup_factor(self) -> float:
        return min(1.0, (self.step + 1) / max(1, self.optim.lr_warmup_steps))

    def run_lr_factor(self, total_steps: int) -> float:
        """Pretraining's schedule at this step of a ``total_steps`` run: warm-up, constant, cool-down."""
        cooldown = self.optim.lr_cooldown_steps
        cool = min(1.0, (total_steps - self.step) / cooldown) if cooldown else 1.0
        return self.warmup_factor() * cool

    def step_lr_factor(self) -> float:
        return self.lr_factor if self.lr_factor is not None else self.warmup_factor()

    def new_slots(self, local_batch: int, canvas: int) -> "Slots":
        """Empty batch slots for this learner's steps on a canvas x canvas field (with the draws that
        Deep Improvement Supervision needs when it is on)."""
        seed = None
        if self.optim.improvement_targets:
            seed = int(np.random.SeedSequence([self.seed, _REVEAL_STREAM]).generate_state(1)[0])
        return Slots(self.model, local_batch, self.world, canvas, improvement_seed=seed)

    def eval_model(self) -> RecursiveModel:
        """The network used for evaluation and export: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.model

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is None:
            return
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
            ema_p.lerp_(p, 1 - self.optim.ema_decay)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(), "puzzles": self.puzzles.state_dict(), "step": self.step,
                "halt_generator": self.halt_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.puzzles.load_state_dict(state["puzzles"])
        self.step = state["step"]
        self._load_halt_generator(state["halt_generator"].cpu())

    def _load_halt_generator(self, saved: Tensor) -> None:
        """The saved halting generator; one saved on another device type (its state has another size,
        e.g. a CPU run resumed on a GPU) cannot be restored, so the generator is reseeded from
        (seed, step) instead: the same draws on every rank and every time this checkpoint is resumed."""
        if saved.numel() == self.halt_generator.get_state().numel():
            self.halt_generator.set_state(saved)
            return
        reseed = int(np.random.SeedSequence([self.seed, self.step]).generate_state(1)[0])
        self.halt_generator.manual_seed(reseed)
        if self.world.is_main:
            print(f"halting draws: the checkpoint's generator is from another device type; reseeded from "
                  f"seed {self.seed} and step {self.step}", flush=True)


class Slots:
    """The persistent batch of one rank: ``local_batch`` slots of the global batch.

    Rank r owns global slots ``r * local_batch .. (r + 1) * local_batch - 1``. Refilling looks at the
    halted slots of every rank, takes that many samples from the (identical on every rank) stream and
    hands them out in global slot order, so a run's samples do not depend on the number of ranks.

    ``improvement_seed`` (Deep Improvement Supervision only): each fresh sample also gets ``reveal``,
    one uniform draw per cell that orders the turning of its cells (``losses.improvement_targets``),
    drawn for the global batch from a generator seeded alike on every rank.
    """

    def __init__(self, model: RecursiveModel, local_batch: int, world: World, canvas: int,
                 improvement_seed: int | None = None):
        self.world, self.local_batch, self.side = world, local_batch, canvas
        device = world.device
        cells = canvas * canvas
        self.reveal: Tensor | None = None
        if improvement_seed is not None:
            self.reveal = torch.zeros(local_batch, cells, device=device)
            self.reveal_generator = torch.Generator().manual_seed(improvement_seed)
        self.inputs = torch.zeros(local_batch, cells, dtype=torch.uint8, device=device)
        self.labels = torch.zeros(local_batch, cells, dtype=torch.uint8, device=device)
        self.puzzle_ids = torch.zeros(local_batch, dtype=torch.long, device=device)
        self.steps = torch.zeros(local_batch, dtype=torch.long, device=device)
        self.halted = torch.ones(local_batch, dtype=torch.bool, device=device)
        self.carry = model.initial_carry(local_batch, device, side=canvas)

    def refill(self, model: RecursiveModel, source: SampleSource) -> int:
        """Give every halted slot (on every rank) a fresh sample; returns how many slots were refilled.

        One device-to-host copy (the halted flags of every rank); the writes use slot indices, so
        nothing else waits for the device.
        """
        halted_all = self.world.all_gather_cat(self.halted).cpu().numpy()
        count = int(halted_all.sum())
        if count == 0:
            return 0
        fresh = source.take(count)
        reveal = None
        if self.reveal is not None:  # drawn on every rank, whether or not it refills a slot, to stay alike
            reveal = torch.rand(count, self.side * self.side, generator=self.reveal_generator)
        # The k-th halted global slot gets the k-th fresh sample; keep the ones in this rank's range.
        start = self.world.rank * self.local_batch
        mine = halted_all[start:start + self.local_batch]
        slots = np.flatnonzero(mine)
        if len(slots) == 0:
            return count
        picks = (np.cumsum(halted_all) - 1)[start:start + self.local_batch][mine]
        index = self._to_device(slots)
        self.inputs[index] = self._to_device(fresh.inputs[picks])
        self.labels[index] = self._to_device(fresh.labels[picks])
        self.puzzle_ids[index] = self._to_device(fresh.puzzle_ids[picks])
        self.steps[index] = 0
        if reveal is not None:
            self.reveal[index] = reveal[torch.from_numpy(picks)].to(self.world.device)
        model.reset_slots_(self.carry, index)
        return count

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on this rank's device; through pinned memory, without waiting, on a GPU."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.world.device.type == "cpu":
            return tensor
        if self.world.device.type != "cuda":  # another accelerator (or the dry run's meta device)
            return tensor.to(self.world.device)
        return tensor.pin_memory().to(self.world.device, non_blocking=True)


def train_step(learner: Learner, slots: Slots, source: SampleSource,
               halve_on_oom: bool = False) -> dict[str, Tensor]:
    """Refill halted slots, run one supervision step, update network, puzzle rows and EMA.

    The slots go through forward and backward ``learner.micro_batch_size`` at a time, their
    gradients adding up to the whole batch's. ``halve_on_oom``: after running out of GPU memory
    there, run them again at half the micro-batch (see ``_forward_backward_halving``). Returns
    metric sums over the global batch (see ``losses.act_loss``), already summed over ranks.
    """
    model, optim, world = learner.model, learner.optim, learner.world
    slots.refill(model, source)
    model.train()
    if halve_on_oom:
        loss_sum, q_logits, step_terms = _forward_backward_halving(learner, slots)
    else:
        loss_sum, q_logits, step_terms = _forward_backward(
            learner, slots, learner.micro_batch_size(slots.side, slots.local_batch))
    slots.steps += 1
    # Deep Improvement Supervision drops learned halting: every sample takes all max_steps steps.
    learned_halting = not optim.improvement_targets
    halted = halt_decision(q_logits, slots.steps, learner.model_config, training=learned_halting,
                           generator=learner.halt_generator,
                           slots=(world.rank * slots.local_batch, optim.global_batch))
    metrics = act_metrics(step_terms, halted, slots.steps)

    warm = learner.step_lr_factor()
    _all_reduce_gradients(model, world)
    if optim.train_network:
        for group in learner.optimizer.param_groups:
            group["lr"] = optim.lr * warm
        learner.optimizer.step()
    learner.optimizer.zero_grad(set_to_none=True)
    learner.puzzles.step(optim.puzzle_lr * warm, optim.puzzle_weight_decay)
    if optim.train_network:
        learner.update_ema()
    learner.step += 1

    slots.halted = halted
    metrics["loss"] = loss_sum * optim.global_batch
    summed = torch.stack(list(metrics.values()))
    world.all_reduce_sum(summed)
    return dict(zip(metrics.keys(), summed))


def _forward_backward_halving(learner: Learner, slots: Slots) -> tuple[Tensor, Tensor, StepTerms]:
    """``_forward_backward`` at the learner's micro-batch; after running out of GPU memory, the failed
    attempt's gradients and puzzle lookups are dropped, its memory freed, and the slots run again,
    from the carry they started with, at half the micro-batch (kept for later steps). Raises
    MemoryError when even a micro-batch of 1 does not fit."""
    while True:
        micro = learner.micro_batch_size(slots.side, slots.local_batch)
        try:
            return _forward_backward(learner, slots, micro)
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, once the traceback that holds the attempt's tensors is gone
        _drop_failed_attempt(learner)
        learner.halve_micro_batch(slots.side, slots.local_batch)


def _drop_failed_attempt(learner: Learner) -> None:
    """Forget a failed forward/backward's gradients and lookups, and give its memory back."""
    learner.optimizer.zero_grad(set_to_none=True)
    learner.puzzles.zero_grad()
    free_memory(learner.world.device)


def free_memory(device: torch.device) -> None:
    """Return what dropped tensors held: Python's cycles first (a failed attempt's autograd graph may
    sit in them), then the CUDA allocator's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _forward_backward(learner: Learner, slots: Slots, micro: int) -> tuple[Tensor, Tensor, StepTerms]:
    """Forward and backward of every slot, ``micro`` at a time; returns the loss summed over them,
    the q logits (local batch, 2) and the metric terms.

    The new carry goes into the slots only once every micro-batch has run: a step that fails
    part-way (out of memory) leaves the slots as they were, so it can be run again.
    """
    loss_sum, q_parts, term_parts, carry_parts = 0.0, [], [], []
    for start in range(0, slots.local_batch, micro):
        part = slice(start, min(start + micro, slots.local_batch))
        loss, q_logits, terms, carry = _micro_step(learner, slots, part)
        loss_sum, q_parts, term_parts = loss_sum + loss, q_parts + [q_logits], term_parts + [terms]
        carry_parts.append((part, carry))
    for part, carry in carry_parts:
        slots.carry.y[part] = carry.y
        slots.carry.z[part] = carry.z
    return loss_sum, torch.cat(q_parts), StepTerms.cat(term_parts)


def _micro_step(learner: Learner, slots: Slots, part: slice) -> tuple[Tensor, Tensor, StepTerms, Carry]:
    """Forward and backward of the slots in ``part``.

    Returns the (detached) loss, q logits, metric terms and new carry of these slots.
    """
    model, config = learner.model, learner.model_config
    puzzle_emb = learner.puzzles.lookup(slots.puzzle_ids[part])
    inputs = slots.inputs[part]
    carry, logits, q_logits = model(Carry(slots.carry.y[part], slots.carry.z[part]), inputs, puzzle_emb)
    target = None
    if config.arch == "hrm":
        with torch.no_grad():
            _, _, next_q = model(carry, inputs, puzzle_emb.detach())
        target = q_continue_target(next_q, slots.steps[part] + 1 >= config.max_steps)
    labels = slots.labels[part]
    if learner.optim.improvement_targets:
        labels = improvement_targets(inputs, labels, slots.reveal[part], slots.steps[part] + 1, config.max_steps)
    loss, terms = act_loss_terms(logits, labels.long(), q_logits, learner.optim.global_batch, target)
    loss.backward()
    return loss.detach(), q_logits.detach(), terms, carry


def warm_up_train_step(learner: Learner, side: int, batch: int) -> None:
    """Forward and backward of every micro-batch a step of ``batch`` slots on this canvas runs, on
    blank samples, then their gradients and puzzle lookups dropped: the network, the puzzle rows and
    the real slots stay as they were. A compiled step compiles its graphs here, before timed work."""
    blank = learner.new_slots(batch, side)
    learner.model.train()
    _forward_backward(learner, blank, learner.micro_batch_size(side, batch))
    learner.optimizer.zero_grad(set_to_none=True)
    learner.puzzles.zero_grad()


def _all_reduce_gradients(model: torch.nn.Module, world: World) -> None:
    """Sum gradients over ranks (the loss is already divided by the global batch), one flat buffer."""
    if not world.distributed:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    world.all_reduce_sum(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
