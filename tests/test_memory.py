"""What a training step keeps for backward: no fp32 copies in bf16, no whole qkv buffer, no SwiGLU
intermediates; the custom backward passes equal autograd's; activation checkpointing."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks

from pretrain.config import tiny
from pretrain.memory import _training_step, saved_bytes
from pretrain.model import _GatedDown, _rms_norm_values, _RMSNorm, build_model


def saved_storages(run) -> list[tuple[int, torch.dtype]]:
    """(bytes, dtype) of every distinct storage saved for backward while ``run()`` builds a graph."""
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = (storage.nbytes(), tensor.dtype)
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    out.backward()
    return list(seen.values())


B, SIDE = 2, 5


def _bf16_step_storages(config):
    model = build_model(config, dtype=torch.bfloat16)
    return saved_storages(lambda: _training_step(model, SIDE, B, seed=0)[0])


def test_a_bf16_step_saves_no_fp32_copy_whole_qkv_or_swiglu_intermediate():
    config = tiny()  # hidden 64, SwiGLU inner 192
    L, C, inner = config.prefix_tokens + SIDE * SIDE, config.hidden, config.mlp_inner
    saved = _bf16_step_storages(config)
    sizes = {(nbytes, dtype) for nbytes, dtype in saved}
    assert (B * L * C * 4, torch.float32) not in sizes  # RMSNorm's fp32 copy of its input
    assert (B * L * 3 * C * 2, torch.bfloat16) not in sizes  # the qkv output, kept whole by v
    assert (B * L * inner * 2, torch.bfloat16) not in sizes  # silu(gate) and silu(gate) * up
    assert (B * L * 2 * inner * 2, torch.bfloat16) in sizes  # the gate_up output is what the SwiGLU keeps


def test_the_storage_check_sees_a_plain_autograd_norm():
    """The check above can fail: plain autograd on a bf16 input does save an fp32 copy."""
    x = torch.randn(B, 29, 64, dtype=torch.bfloat16, requires_grad=True)
    plain = saved_storages(lambda: _rms_norm_values(x, 1e-5).float().sum())
    assert (B * 29 * 64 * 4, torch.float32) in set(plain)
    lean = saved_storages(lambda: _RMSNorm.apply(x, 1e-5).float().sum())
    assert set(lean) == {(B * 29 * 64 * 2, torch.bfloat16)}


def test_the_first_cycles_save_nothing():
    """What ``python -m pretrain.memory --last-cycle-only`` relies on: T does not change the count."""
    config = tiny().replace(T=3)
    counts = [saved_bytes(build_model(config.replace(T=t), dtype=torch.bfloat16), SIDE, B) for t in (1, 3)]
    assert counts[0] == counts[1] > 0


def test_rms_norm_backward_matches_autograd():
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _RMSNorm.apply(t, 1e-5), (x,))
    g = torch.randn(4, 50, 512)
    x = (3 * torch.randn(4, 50, 512)).bfloat16().requires_grad_(True)
    grads = []
    for norm in (_rms_norm_values, _RMSNorm.apply):
        x.grad = None
        (norm(x, 1e-5).float() * g).sum().backward()
        grads.append(x.grad.float())
    torch.testing.assert_close(norm(x, 1e-5), _rms_norm_values(x, 1e-5), rtol=0, atol=0)  # same forward
    assert (grads[0] - grads[1]).norm() <= 1e-4 * grads[0].norm()  # bf16 rounding of the last step at most


def _plain_gated_down(h, weight):
    gate, up = h.chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, weight)


def test_gated_down_backward_matches_autograd():
    h = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_GatedDown.apply, (h, w))
    h = torch.randn(4, 50, 384).bfloat16().requires_grad_(True)
    w = (torch.randn(64, 192) / 14).bfloat16().requires_grad_(True)
    g = torch.randn(4, 50, 64)
    grads = []
    for fn in (_plain_gated_down, _GatedDown.apply):
        h.grad = w.grad = None
        out = fn(h, w)
        (out.float() * g).sum().backward()
        grads.append((out, h.grad.float(), w.grad.float()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for a, b in zip(grads[0][1:], grads[1][1:]):
        assert (a - b).norm() <= 1e-4 * a.norm()


@pytest.mark.parametrize("arch", ["trm", "hrm"])
def test_activation_checkpointing_gives_the_same_gradients_with_less_saved(arch):
    config = tiny().replace(arch=arch, prefix_tokens=1 if arch == "hrm" else 4)
    results = []
    for checkpointing in (False, True):
        model = build_model(config, dtype=torch.float64, seed=2).double()
        model.activation_checkpointing = checkpointing
        with torch.no_grad():
            model.q_head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        loss, puzzle = _training_step(model, SIDE, B, seed=1)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()] + [puzzle.grad.clone()]
        results.append((loss.detach(), grads, saved_bytes(model, SIDE, B)))
    (loss_a, grads_a, bytes_a), (loss_b, grads_b, bytes_b) = results
    assert loss_a == loss_b
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert bytes_b * 3 < bytes_a
