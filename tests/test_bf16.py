"""bf16 compute on the CPU: what a GPU runs by default, next to fp32 on the same weights and batch.

The dtype is chosen by device (bf16 on GPUs), so without these the CPU tests would only run fp32.
Tolerances are bf16's: 8 bits of mantissa, compounded over the chained network calls.
"""

import torch

from arc_data.synthetic import synthetic_tasks
from pretrain.config import tiny
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream
from pretrain.distributed import World
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.model import build_model

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


def test_bf16_forward_is_close_to_fp32():
    config = tiny()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab, (8, config.canvas ** 2), generator=g)
    puzzle = torch.randn(8, config.puzzle_dim, generator=g)
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build_model(config, dtype=dtype)  # the same fp32 weights, computed in dtype
        carry, logits, q = model(model.initial_carry(8), tokens, puzzle)
        assert carry.y.dtype == dtype and logits.dtype == torch.float32 and torch.isfinite(logits).all()
        outputs[dtype] = logits.detach()
    full, half = outputs[torch.float32], outputs[torch.bfloat16]
    assert not torch.equal(full, half)  # bf16 really ran
    assert (full - half).norm() < 0.03 * full.norm()
    assert (full.argmax(-1) == half.argmax(-1)).float().mean() > 0.95


def test_bf16_train_step_is_close_to_fp32():
    config = tiny().replace(T=1)  # fewer network calls: bf16 matrix products are slow on a CPU
    catalogue = PuzzleCatalogue(synthetic_tasks(8, 0, max_side=10), [], 4, 0)
    data = DataConfig(train_sources=(), held_out_sources=(), num_aug=4, canvas=10)
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        learner = Learner(config, OptimConfig(global_batch=8, lr=1e-3, lr_warmup_steps=1), catalogue.num_ids, CPU,
                          dtype, seed=0)
        before = [p.detach().clone() for p in learner.model.parameters()]
        stream, slots = TrainStream(catalogue, data), Slots(learner.model, 8, CPU, 10)
        losses[dtype] = torch.stack([train_step(learner, slots, stream)["loss"] / 8 for _ in range(3)])
        assert slots.carry.y.dtype == dtype
        assert all(p.dtype == torch.float32 for p in learner.model.parameters())  # fp32 master weights
        assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
        assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    assert torch.isfinite(losses[torch.bfloat16]).all()
    torch.testing.assert_close(losses[torch.bfloat16], losses[torch.float32], rtol=0.03, atol=0)
