"""The single training step shared by pretraining and test-time fine-tuning.

``Learner`` holds everything that learns (network, EMA copy, AdamATan2 state, puzzle table, step
count); ``Slots`` holds the persistent batch (each slot: a sample, its carry, its step count);
``train_step`` runs one supervision step on every slot, one optimizer step, and refills the slots
whose samples halted with fresh samples from a stream.

Deep supervision as in TRM: a sample stays in its slot for up to ``max_steps`` optimizer steps,
its carry detached between them, until it halts; then the slot gets the next sample of the stream.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch
from adam_atan2_pytorch import AdamAtan2
from torch import Tensor

from pretrain.config import ModelConfig
from pretrain.data import SampleBatch
from pretrain.distributed import World
from pretrain.losses import act_loss, q_continue_target
from pretrain.model import RecursiveModel, build_model, halt_decision
from pretrain.puzzle_embedding import PuzzleEmbedding


@dataclass
class OptimConfig:
    global_batch: int = 768  # samples per optimizer step, summed over ranks
    lr: float = 1e-4  # network learning rate after warm-up
    lr_warmup_steps: int = 2000  # linear warm-up, then constant (the puzzle lr warms up too)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    puzzle_lr: float = 1e-2  # sign-SGD on the puzzle rows
    puzzle_weight_decay: float = 0.1
    ema_decay: float = 0.999  # EMA of the network used for evaluation and export; 0 turns it off
    train_network: bool = True  # False: only the puzzle rows learn (embedding-only fine-tuning)


class SampleSource(Protocol):
    def take(self, n: int) -> SampleBatch: ...


class Learner:
    """Network, EMA, optimizer, puzzle table and step: what a checkpoint saves and a step updates."""

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, num_puzzle_ids: int, world: World,
                 dtype: torch.dtype, seed: int = 0, model: RecursiveModel | None = None):
        self.model_config, self.optim, self.world = model_config, optim, world
        self.model = model if model is not None else build_model(model_config, dtype, seed, world.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if optim.ema_decay > 0 else None
        # AdamATan2 with a = b = 1: the update is exactly atan2(m_hat, sqrt(v_hat)), no epsilon.
        self.optimizer = AdamAtan2(self.model.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                   weight_decay=optim.weight_decay, a=1.0, b=1.0)
        self.puzzles = PuzzleEmbedding(num_puzzle_ids, model_config.puzzle_dim, world.device)
        self.step = 0
        # The next step's learning-rate factor (network and puzzle rows), set by a caller that schedules
        # it (test-time fine-tuning, submission/schedule.py); None: the warm-up factor.
        self.lr_factor: float | None = None
        # Halting exploration draws: the same generator on every rank, each rank using its slice.
        self.halt_generator = torch.Generator(world.device).manual_seed(seed)

    def warmup_factor(self) -> float:
        return min(1.0, (self.step + 1) / max(1, self.optim.lr_warmup_steps))

    def step_lr_factor(self) -> float:
        return self.lr_factor if self.lr_factor is not None else self.warmup_factor()

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
        self.halt_generator.set_state(state["halt_generator"].cpu())


class Slots:
    """The persistent batch of one rank: ``local_batch`` slots of the global batch.

    Rank r owns global slots ``r * local_batch .. (r + 1) * local_batch - 1``. Refilling looks at the
    halted slots of every rank, takes that many samples from the (identical on every rank) stream and
    hands them out in global slot order, so a run's samples do not depend on the number of ranks.
    """

    def __init__(self, model: RecursiveModel, local_batch: int, world: World, canvas: int):
        self.world, self.local_batch = world, local_batch
        device = world.device
        cells = canvas * canvas
        self.inputs = torch.zeros(local_batch, cells, dtype=torch.uint8, device=device)
        self.labels = torch.zeros(local_batch, cells, dtype=torch.uint8, device=device)
        self.puzzle_ids = torch.zeros(local_batch, dtype=torch.long, device=device)
        self.steps = torch.zeros(local_batch, dtype=torch.long, device=device)
        self.halted = torch.ones(local_batch, dtype=torch.bool, device=device)
        self.carry = model.initial_carry(local_batch, device, side=canvas)

    def refill(self, model: RecursiveModel, source: SampleSource) -> int:
        """Give every halted slot (on every rank) a fresh sample; returns how many slots were refilled."""
        halted_all = self.world.all_gather_cat(self.halted)
        count = int(halted_all.sum())
        if count == 0:
            return 0
        fresh = source.take(count)
        # The k-th halted global slot gets the k-th fresh sample; keep the ones in this rank's range.
        order = torch.cumsum(halted_all.long(), 0) - 1
        start = self.world.rank * self.local_batch
        mine = order[start:start + self.local_batch][self.halted].cpu().numpy()
        device = self.world.device
        self.inputs[self.halted] = torch.from_numpy(fresh.inputs[mine]).to(device)
        self.labels[self.halted] = torch.from_numpy(fresh.labels[mine]).to(device)
        self.puzzle_ids[self.halted] = torch.from_numpy(fresh.puzzle_ids[mine]).to(device)
        self.steps[self.halted] = 0
        self.carry = model.reset_carry(self.carry, self.halted)
        return count


def train_step(learner: Learner, slots: Slots, source: SampleSource) -> dict[str, Tensor]:
    """Refill halted slots, run one supervision step, update network, puzzle rows and EMA.

    Returns metric sums over the global batch (see ``losses.act_loss``), already summed over ranks.
    """
    model, optim, world = learner.model, learner.optim, learner.world
    slots.refill(model, source)
    model.train()
    puzzle_emb = learner.puzzles.lookup(slots.puzzle_ids)
    carry, logits, q_logits = model(slots.carry, slots.inputs, puzzle_emb)
    slots.steps += 1
    halted = halt_decision(q_logits.detach(), slots.steps, learner.model_config, training=True,
                           generator=learner.halt_generator,
                           slots=(world.rank * slots.local_batch, optim.global_batch))
    target = None
    if learner.model_config.arch == "hrm":
        with torch.no_grad():
            _, _, next_q = model(carry, slots.inputs, puzzle_emb.detach())
        target = q_continue_target(next_q, slots.steps >= learner.model_config.max_steps)
    loss, metrics = act_loss(logits, slots.labels.long(), q_logits, halted, slots.steps, optim.global_batch, target)
    loss.backward()

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

    slots.carry, slots.halted = carry, halted
    metrics["loss"] = loss.detach() * optim.global_batch
    summed = torch.stack(list(metrics.values()))
    world.all_reduce_sum(summed)
    return dict(zip(metrics.keys(), summed))


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
