"""Faster fp32 matrix products on a CPU, at fp32 precision: oneDNN's kernels instead of MKL's.

PyTorch's CPU wheels multiply fp32 matrices with MKL, and MKL runs its AVX2 code on AMD CPUs: about
105 GFLOP/s per core of the 2-core AMD EPYC (Zen 5) machine at the network's shapes, where oneDNN's
AVX-512 kernels reach about 240 (docs/BENCHMARKS.md, "The CPU step"). PyTorch sends an fp32 product to
oneDNN only when ``torch.backends.mkldnn.matmul.fp32_precision`` is ``"bf16"``, a setting that *allows*
oneDNN to round the operands to bf16. Whether it does depends on the CPU, so ``use_onednn_matmul``
turns the setting on only after a probe product shows fp32 precision (on the Zen 5 above it does,
and the products equal MKL's bit for bit at the network's widths); where oneDNN would round, the
setting stays off and every product stays MKL's.

Flash attention on a CPU runs its small products through the same switch and becomes about 12x
slower with it on, so attention runs through ``flash_attention``, which turns the switch off for
the call (forward and backward; a custom op, so a compiled step keeps it in one graph).

``ARC_CPU_MATMUL=mkl`` keeps PyTorch's default everywhere.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor

ENV_SWITCH = "ARC_CPU_MATMUL"  # "mkl": never use oneDNN for fp32 products
_ONEDNN = "bf16"  # the value of the PyTorch setting that routes fp32 products to oneDNN
_DEFAULT = "none"
# A probe product's error, relative to its float64 value, above which oneDNN is taken to round to bf16.
# fp32 stays near 1e-7; bf16 operands (8 significant bits) give about 1e-3.
FP32_RELATIVE_ERROR = 1e-5


def _setting():
    return getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)


_on = False  # a plain flag, so a compiled step guards on it


def onednn_matmul_on() -> bool:
    """Whether fp32 products in this process go to oneDNN (``use_onednn_matmul`` succeeded)."""
    return _on


@contextmanager
def _matmul_precision(value: str) -> Iterator[None]:
    setting = _setting()
    old = setting.fp32_precision
    setting.fp32_precision = value
    try:
        yield
    finally:
        setting.fp32_precision = old


def probe_relative_error(multiply: Callable[[Tensor, Tensor], Tensor]) -> float:
    """The relative error of ``multiply`` on a product whose operands bf16 would round (1 + small), at
    the network's shape (tokens x 64 times 64 x 192)."""
    generator = torch.Generator().manual_seed(0)
    a = 1 + 1e-3 * torch.randn(256, 64, generator=generator)
    b = 1 + 1e-3 * torch.randn(64, 192, generator=generator)
    exact = a.double() @ b.double()
    return ((multiply(a, b).double() - exact).abs().max() / exact.abs().max()).item()


def _onednn_product(a: Tensor, b: Tensor) -> Tensor:
    with _matmul_precision(_ONEDNN):
        return a @ b


def use_onednn_matmul() -> bool:
    """Route this process's fp32 products to oneDNN where that keeps fp32 precision; returns whether it
    did. Off when ``ARC_CPU_MATMUL=mkl``, when this PyTorch has no such setting, or when the probe
    product comes out rounded."""
    global _on
    if os.environ.get(ENV_SWITCH, "").lower() == "mkl" or _setting() is None:
        return False
    if not _on and probe_relative_error(_onednn_product) > FP32_RELATIVE_ERROR:
        return False
    _setting().fp32_precision = _ONEDNN
    _on = True
    return True


def use_default_matmul() -> None:
    """Back to PyTorch's default (MKL) for fp32 products."""
    global _on
    if _setting() is not None:
        _setting().fp32_precision = _DEFAULT
    _on = False


# ---------------------------------------------------------------------------------------------
# Attention with the switch off


@torch.library.custom_op("arc_trm::cpu_flash_attention", mutates_args=())
def _forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    with _matmul_precision(_DEFAULT):
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    # Contiguous, so the shapes the compiler is told (below) hold whatever layout q, k and v have.
    return out.contiguous(), logsumexp.contiguous()


# The fake kernels tell the compiler the outputs' shapes and strides. Inductor's cache may keep an
# old fake kernel after an edit: clear it (/tmp/torchinductor_$USER) when changing them.
@_forward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    batch, heads, length, _ = q.shape
    return q.new_empty(batch, heads, length, v.shape[-1]), q.new_empty(batch, heads, length)


@torch.library.custom_op("arc_trm::cpu_flash_attention_backward", mutates_args=())
def _backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
              logsumexp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    with _matmul_precision(_DEFAULT):
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, logsumexp, 0.0, False)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@_backward.register_fake
def _(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
      logsumexp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _save(ctx, inputs: tuple[Tensor, Tensor, Tensor], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(*inputs, *output)


def _gradients(ctx, grad: Tensor, _grad_logsumexp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _backward(grad.contiguous(), *ctx.saved_tensors)


_forward.register_autograd(_gradients, setup_context=_save)


def flash_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v)`` on a CPU (no mask, not causal), equal to it bit for
    bit, run with fp32 products left to MKL. q, k, v: (B, H, L, D)."""
    return _forward(q, k, v)[0]
