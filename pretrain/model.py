"""The recursive reasoning models: TRM (attention or sequence-MLP) and HRM, in one file.

Read top to bottom: initialisation helpers, RMSNorm, rotary position embeddings (1-D and 2-D),
attention, SwiGLU, the post-norm block, the shared input embedding and heads, then TRM, HRM,
the ACT halting rule, ``build_model`` and ``count_parameters``.

Shapes: B batch, S canvas cells (side * side, row-major), P prefix tokens, L = P + S, C hidden,
H heads, D head dim, V vocabulary.

Dtypes: parameters are fp32 master weights; every forward computes in ``model.compute_dtype``
(``config.forward_dtype`` unless the constructor is given another) by casting weights at use.
RMSNorm and RoPE compute in fp32 and cast back. Logits and q logits come out in fp32. (A model
built with dtype=torch.float64 computes everything in fp64; the tests use that for tight checks.)

One call of ``forward`` is one *supervision step*: the recursions of ``TRM`` or ``HRM`` below, then the
output and halting heads, with the carry (y, z) passed on detached; training takes one optimizer step
per supervision step, up to ``max_steps`` of them per sample. The caller owns the ACT loop
(step counts, halting, refilling slots) and passes the carry back in; ``reset_carry`` puts chosen
batch slots back to the initial state.

Memory for backward (measured in docs/BENCHMARKS.md with ``pretrain.memory``): RMSNorm keeps its
input in the compute dtype rather than autograd's fp32 copy, the SwiGLU keeps only its gate_up
output (the gated product is recomputed in backward), and v is copied out of the qkv output so the
whole qkv buffer is not kept alive by it. The forward values are exactly those of plain autograd.
``model.activation_checkpointing = True`` keeps only each network call's input and recomputes the
call in backward. ``model.compile_step()`` compiles the supervision step with static shapes; the
canvas geometry and RoPE tables are worked out in eager code and passed in as tensors, so each
(canvas, batch, mode) is one graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pretrain.config import ModelConfig
from pretrain.cpu_matmul import flash_attention, onednn_matmul_on

# ---------------------------------------------------------------------------------------------
# Initialisation

# Standard deviation of a standard normal truncated to [-2, 2]:
# var = 1 - 2 * a * phi(a) / (2 * Phi(a) - 1) with a = 2.
_A = 2.0
_PHI = math.exp(-_A * _A / 2) / math.sqrt(2 * math.pi)
_MASS = math.erf(_A / math.sqrt(2))  # 2 * Phi(a) - 1
TRUNC_STD = math.sqrt(1 - 2 * _A * _PHI / _MASS)  # ~0.8796


@torch.no_grad()
def trunc_normal_(tensor: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` from a normal cut at +-2 (of the underlying unit normal), rescaled to std ``std``."""
    if std == 0:
        return tensor.zero_()
    nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=-_A, b=_A, generator=generator)
    return tensor.mul_(std / TRUNC_STD)


class Linear(nn.Module):
    """A linear layer whose fp32 weight is cast to the input's dtype at use. Init std 1/sqrt(fan_in)."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(fan_out, fan_in), 1 / math.sqrt(fan_in), generator))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision for norms and rotations: fp32, or fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rms_norm_values(x: Tensor, eps: float) -> Tensor:
    xw = x.to(_work_dtype(x.dtype))
    return (xw * torch.rsqrt(xw.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    """RMSNorm that saves its input in the input's dtype and recomputes the norm in backward.

    Plain autograd would save the fp32 copy of a bf16 input (twice the bytes). The gradient is
    autograd's, reordered: dx = r * (g - y * mean(g * y)) with r = rsqrt(mean(x^2) + eps), y = x * r.
    """

    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        ctx.eps = eps
        ctx.save_for_backward(x)
        return _rms_norm_values(x, eps)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        xw = x.to(_work_dtype(x.dtype))
        r = torch.rsqrt(xw.square().mean(-1, keepdim=True) + ctx.eps)
        y = xw * r
        g = grad.to(xw.dtype)
        return (r * (g - y * (g * y).mean(-1, keepdim=True))).to(x.dtype), None


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """Weightless RMSNorm over the last axis, computed in fp32 (fp64 for fp64 input)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _RMSNorm.apply(x, eps)
    return _rms_norm_values(x, eps)


# ---------------------------------------------------------------------------------------------
# Rotary position embeddings
#
# rope1d: token i of the flattened sequence (prefix 0..P-1, then cells row-major) has position i;
#   every head dim pair (j, j + D/2) rotates by angle i * base^(-2j/D) ("rotate half" layout).
# rope2d: the head dim is split in two halves; the first half rotates with the cell's row, the
#   second with its column, each as 1-D RoPE of size D/2. Cell (r, c) of a side-s canvas has
#   position (r + 1, c) whatever s is, so the relative offset between two cells does not depend on
#   the canvas size. Prefix token k sits on a virtual row 0 above the canvas at column k: position
#   (0, k). Prefix tokens stay distinguishable from each other and their offset to a cell is again
#   independent of the canvas size.


class Rope(NamedTuple):
    cos: Tensor  # (L, D) fp32 (fp64 for fp64 models)
    sin: Tensor  # (L, D)
    groups: int  # 1 for rope1d, 2 for rope2d: rotate-half is applied within each of `groups` chunks of D


def rope_groups(config: ModelConfig) -> int:
    return 1 if config.pos_encoding == "rope1d" else 2


def _inv_freq(dim: int, base: float, device: torch.device) -> Tensor:
    return 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim))  # (dim/2,)


def rope_positions(config: ModelConfig, side: int, device: torch.device | str = "cpu") -> Tensor:
    """Positions of the L = P + side**2 tokens: (L,) for rope1d, (L, 2) as (row, column) for rope2d."""
    P = config.prefix_tokens
    if config.pos_encoding == "rope1d":
        return torch.arange(P + side * side, device=device, dtype=torch.float64)
    cells = torch.arange(side * side, device=device)
    rows = torch.cat([torch.zeros(P, device=device, dtype=torch.long), cells // side + 1])
    cols = torch.cat([torch.arange(P, device=device), cells % side])
    return torch.stack([rows, cols], dim=-1).double()


def build_rope(config: ModelConfig, side: int, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> Rope:
    """cos/sin tables (angles computed in fp64 on the CPU, stored in ``dtype`` on ``device``)."""
    with torch.inference_mode(False):  # tables cached under inference mode must still serve training
        return _build_rope(config, side, torch.device(device), dtype)


def _build_rope(config: ModelConfig, side: int, device: torch.device, dtype: torch.dtype) -> Rope:
    cpu = torch.device("cpu")
    pos = rope_positions(config, side, cpu)
    D = config.head_dim
    if config.pos_encoding == "rope1d":
        angles = torch.outer(pos, _inv_freq(D, config.rope_base, cpu))  # (L, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, D)
    else:
        inv = _inv_freq(D // 2, config.rope_base, cpu)  # (D/4,)
        a_row = torch.outer(pos[:, 0], inv)
        a_col = torch.outer(pos[:, 1], inv)
        angles = torch.cat([a_row, a_row, a_col, a_col], dim=-1)  # (L, D)
    return Rope(angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype),
                rope_groups(config))


def _rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate x (B, L, H, D) by position; computed in the tables' dtype, returned in x's dtype."""
    B, L, H, D = x.shape
    g = rope.groups
    xw = x.to(rope.cos.dtype).reshape(B, L, H, g, D // g)
    cos = rope.cos.view(1, L, 1, g, D // g)
    sin = rope.sin.view(1, L, 1, g, D // g)
    out = xw * cos + _rotate_half(xw) * sin
    return out.view(B, L, H, D).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Layers


class Attention(nn.Module):
    """Non-causal multi-head self-attention with RoPE on q and k, no biases."""

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.heads = config.heads
        self.qkv = Linear(config.hidden, 3 * config.hidden, generator=generator)
        self.out = Linear(config.hidden, config.hidden, generator=generator)

    def forward(self, x: Tensor, rope: Rope) -> Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, C // self.heads).unbind(2)  # each (B, L, H, D)
        # Rotation makes new q and k; a copy of v lets the qkv buffer go (attention saves v for backward).
        q, k, v = apply_rope(q, rope), apply_rope(k, rope), v.contiguous()
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
        if q.dtype == torch.float32 and q.device.type == "cpu" and onednn_matmul_on():
            y = flash_attention(q, k, v)  # the same attention, its small products kept off oneDNN
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, L, C))


class _GatedDown(torch.autograd.Function):
    """down(silu(gate) * up) from h = [gate | up], saving only h and the weight.

    Plain autograd would also keep silu(gate) and the product, each as large as half of h; here the
    product is recomputed in backward with the same operations, so the gradients are autograd's.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(h, weight)
        gate, up = h.chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        h, weight = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        silu = F.silu(gate)
        grad_h = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_inner = grad.matmul(weight)  # (..., inner)
            grad_h = torch.cat([torch.ops.aten.silu_backward(grad_inner * up, gate), grad_inner * silu], dim=-1)
        if ctx.needs_input_grad[1]:
            inner = silu * up
            grad_weight = grad.reshape(-1, grad.shape[-1]).t().matmul(inner.reshape(-1, inner.shape[-1]))
        return grad_h, grad_weight


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) over the last axis; gate and up share one matrix."""

    def __init__(self, width: int, inner: int, generator: torch.Generator | None = None):
        super().__init__()
        self.gate_up = Linear(width, 2 * inner, generator=generator)
        self.down = Linear(inner, width, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        h = self.gate_up(x)
        weight = self.down.weight.to(x.dtype)
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            return _GatedDown.apply(h, weight)
        gate, up = h.chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, weight)


class Block(nn.Module):
    """Post-norm block: x = norm(x + mix(x)); x = norm(x + mlp(x)).

    mix is attention (trm, hrm) or, for trm-mlp, a SwiGLU over the sequence axis. As in the reference
    implementation, the trm-mlp branch normalises while transposed, i.e. over the sequence axis; its
    weights are sized by the sequence length, so trm-mlp only runs at the full canvas.
    """

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.eps = config.norm_eps
        if config.arch == "trm-mlp":
            self.attn = None
            self.token_mlp = SwiGLU(config.seq_len, config.resolved_token_mlp_inner, generator)
        else:
            self.attn = Attention(config, generator)
            self.token_mlp = None
        self.mlp = SwiGLU(config.hidden, config.mlp_inner, generator)

    def forward(self, x: Tensor, rope: Rope) -> Tensor:  # (B, L, C) -> (B, L, C)
        if self.token_mlp is not None:
            xt = x.transpose(1, 2)  # (B, C, L)
            x = rms_norm(xt + self.token_mlp(xt), self.eps).transpose(1, 2)
        else:
            x = rms_norm(x + self.attn(x, rope), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class Reasoner(nn.Module):
    """A stack of blocks; called as net(h) where h already holds the summed inputs."""

    def __init__(self, config: ModelConfig, layers: int, generator: torch.Generator | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config, generator) for _ in range(layers))

    def forward(self, h: Tensor, rope: Rope) -> Tensor:
        for block in self.blocks:
            h = block(h, rope)
        return h


# ---------------------------------------------------------------------------------------------
# Shared pieces: input embedding, initial states, heads


@dataclass
class Carry:
    """The recurrent state between supervision steps, each (B, L, C) in the compute dtype.

    TRM: y is the answer state, z the latent. HRM: y is z_H (the slow module), z is z_L (the fast one).
    """

    y: Tensor
    z: Tensor


def _as_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


class RecursiveModel(nn.Module):
    """What TRM and HRM share: embeddings, the two initial-state buffers, lm_head and q_head."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype | None = None, seed: int = 0):
        super().__init__()
        self.config = config
        self.compute_dtype = dtype if dtype is not None else _as_dtype(config.forward_dtype)
        g = torch.Generator().manual_seed(seed)
        self._generator = g  # only used while subclasses build their layers
        C = config.hidden
        self.embed_scale = math.sqrt(C)
        self.embed_tokens = nn.Parameter(trunc_normal_(torch.empty(config.vocab, C), 1 / math.sqrt(C), g))
        self.lm_head = Linear(C, config.vocab, generator=g)
        self.q_head = Linear(C, 2, bias=True, generator=g)  # index 0: halt logit, 1: continue logit
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # Fixed (not learned) initial states, broadcast to every position.
        self.register_buffer("y_init", trunc_normal_(torch.empty(C), 1.0, g))
        self.register_buffer("z_init", trunc_normal_(torch.empty(C), 1.0, g))
        self._rope_cache: dict[tuple[int, str, torch.dtype], Rope] = {}
        # Recompute each gradient-carrying network call in backward instead of keeping its activations.
        self.activation_checkpointing = False
        # Std of Gaussian noise added to the latent after each of its updates (PTRM, arXiv 2605.19943):
        # an inference option, 0 (off) unless the caller sets it; it draws from torch's global generator.
        self.latent_noise = 0.0
        self._compiled_step = None  # set by compile_step

    # -- sequence geometry ------------------------------------------------------------------

    def canvas_side(self, num_cells: int) -> int:
        side = math.isqrt(num_cells)
        if side * side != num_cells or not 1 <= side <= self.config.canvas:
            raise ValueError(f"{num_cells} cells is not a square canvas of side 1..{self.config.canvas}")
        if self.config.arch == "trm-mlp" and side != self.config.canvas:
            raise ValueError(f"trm-mlp only runs at its full canvas ({self.config.canvas}), got side {side}")
        return side

    def rope(self, side: int, device: torch.device) -> Rope:
        """The cos/sin tables of a side x side canvas, built once per (canvas, device) and reused."""
        dtype = _work_dtype(self.compute_dtype)
        key = (side, str(device), dtype)
        if key not in self._rope_cache:
            self._rope_cache[key] = build_rope(self.config, side, device, dtype)
        return self._rope_cache[key]

    # -- compilation ----------------------------------------------------------------------------

    def compile_step(self, backend: str = "inductor", recompile_limit: int = 64) -> None:
        """torch.compile the supervision step with static shapes: one graph per (canvas, batch,
        train/eval, grad mode), each compiled once. The canvas side and RoPE tables are settled
        in eager code before the call, so nothing in the graph depends on a symbolic size."""
        # Every canvas, micro-batch and mode is its own graph of the same function: allow enough.
        # The option is named cache_size_limit before torch 2.7 (requirements.txt admits 2.4).
        dynamo = torch._dynamo.config
        option = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
        setattr(dynamo, option, max(getattr(dynamo, option), recompile_limit))
        # Compiled as a plain function of (model, tensors) so a deep copy (the EMA) compiles alike.
        self._compiled_step = torch.compile(type(self).supervision_step, backend=backend, dynamic=False)

    @property
    def compiled(self) -> bool:
        return self._compiled_step is not None

    def uncompile_step(self) -> None:
        """Run the supervision step eagerly again (after a compile error)."""
        self._compiled_step = None

    def _perturb(self, z: Tensor) -> Tensor:
        """z plus the latent noise, when it is on (the states after RMSNorm have unit RMS per token)."""
        return z + self.latent_noise * torch.randn_like(z) if self.latent_noise else z

    def _call_net(self, net: nn.Module, h: Tensor, rope: Rope) -> Tensor:
        """One network call; with activation checkpointing only its input is kept for backward."""
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(net, h, rope, use_reentrant=False)
        return net(h, rope)

    # -- input --------------------------------------------------------------------------------

    def input_embedding(self, tokens: Tensor, puzzle_emb: Tensor | None) -> Tensor:
        """sqrt(C) * [puzzle prefix ; embed(tokens)]: (B, S) int, (B, puzzle_dim) -> (B, L, C) compute dtype.

        The puzzle vector is zero-padded to a multiple of C and reshaped into its first
        ``config.puzzle_tokens`` prefix tokens; the rest of the prefix is zero.
        """
        cfg, dt = self.config, self.compute_dtype
        B = tokens.shape[0]
        x = F.embedding(tokens.long(), self.embed_tokens.to(dt))  # (B, S, C)
        prefix = torch.zeros(B, cfg.prefix_tokens, cfg.hidden, device=x.device, dtype=dt)
        if cfg.puzzle_tokens:
            if puzzle_emb is None or puzzle_emb.shape != (B, cfg.puzzle_dim):
                got = None if puzzle_emb is None else tuple(puzzle_emb.shape)
                raise ValueError(f"puzzle_emb must have shape {(B, cfg.puzzle_dim)}, got {got}")
            pe = F.pad(puzzle_emb.to(dt), (0, cfg.puzzle_tokens * cfg.hidden - cfg.puzzle_dim))
            prefix = torch.cat([pe.view(B, cfg.puzzle_tokens, cfg.hidden), prefix[:, cfg.puzzle_tokens:]], dim=1)
        return self.embed_scale * torch.cat([prefix, x], dim=1)  # (B, L, C)

    # -- carry --------------------------------------------------------------------------------

    def initial_carry(self, batch_size: int, device: torch.device | str | None = None,
                      side: int | None = None) -> Carry:
        """Both states at their fixed initial vectors, (B, P + side**2, C); side defaults to the full canvas."""
        device = self.y_init.device if device is None else torch.device(device)
        L = self.config.prefix_tokens + (side or self.config.canvas) ** 2
        shape = (batch_size, L, self.config.hidden)
        y = self.y_init.to(device=device, dtype=self.compute_dtype).expand(shape).contiguous()
        z = self.z_init.to(device=device, dtype=self.compute_dtype).expand(shape).contiguous()
        return Carry(y, z)

    def reset_carry(self, carry: Carry, mask: Tensor) -> Carry:
        """Slots where mask (B,) bool is True go back to the initial states; the others are kept."""
        m = mask.view(-1, 1, 1)
        return Carry(torch.where(m, self.y_init.to(carry.y.dtype), carry.y),
                     torch.where(m, self.z_init.to(carry.z.dtype), carry.z))

    @torch.no_grad()
    def reset_slots_(self, carry: Carry, index: Tensor) -> None:
        """In place: slots ``index`` (K,) long go back to the initial states (no host sync)."""
        carry.y[index] = self.y_init.to(carry.y.dtype)
        carry.z[index] = self.z_init.to(carry.z.dtype)

    # -- output -------------------------------------------------------------------------------

    def heads(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, C) -> logits over the canvas cells (B, S, V), q logits at prefix 0 (B, 2).

        Both in fp32 (fp64 when the model computes in fp64, as tests do).
        """
        out = torch.float64 if y.dtype == torch.float64 else torch.float32
        logits = self.lm_head(y[:, self.config.prefix_tokens:]).to(out)
        q_logits = self.q_head(y[:, 0]).to(out)
        return logits, q_logits

    # -- one supervision step ----------------------------------------------------------------

    def forward(self, carry: Carry, tokens: Tensor, puzzle_emb: Tensor | None) -> tuple[Carry, Tensor, Tensor]:
        """carry, tokens (B, S) or (B, side, side), puzzle_emb (B, puzzle_dim)
        -> (new carry detached, logits (B, S, V), q logits (B, 2))."""
        if tokens.dim() == 3:  # (B, side, side) -> (B, S)
            tokens = tokens.flatten(1)
        side = self.canvas_side(tokens.shape[1])
        expected = (tokens.shape[0], self.config.prefix_tokens + side * side, self.config.hidden)
        if carry.y.shape != expected or carry.z.shape != expected:
            raise ValueError(f"carry {tuple(carry.y.shape)} does not match the input {expected}")
        rope = self.rope(side, tokens.device)
        step = self._compiled_step if self._compiled_step is not None else type(self).supervision_step
        y, z, logits, q_logits = step(self, carry.y, carry.z, tokens, puzzle_emb, rope.cos, rope.sin)
        return Carry(y, z), logits, q_logits

    def supervision_step(self, y: Tensor, z: Tensor, tokens: Tensor, puzzle_emb: Tensor | None, cos: Tensor,
                         sin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The tensor-only body of ``forward`` (what ``compile_step`` compiles): the two states, the
        tokens (B, S), the puzzle rows and the canvas's RoPE tables -> (y, z) detached, logits, q."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# TRM


class TRM(RecursiveModel):
    """Tiny Recursive Model: one network updates the latent z n times, then the answer y, T times.

    One supervision step (forward):
        T-1 times without gradient, then once with:  n times z = net(z + y + x);  y = net(y + z)
        logits = lm_head(y) over the cells;  q = q_head(y at prefix position 0)
    With ``latent_noise`` set (an inference option), each new z gets Gaussian noise of that std.
    """

    def __init__(self, config: ModelConfig, dtype: torch.dtype | None = None, seed: int = 0):
        if config.arch not in ("trm", "trm-mlp"):
            raise ValueError(f"TRM needs arch 'trm' or 'trm-mlp', got {config.arch!r}")
        super().__init__(config, dtype, seed)
        self.net = Reasoner(config, config.layers, self._generator)
        del self._generator

    def supervision_step(self, y: Tensor, z: Tensor, tokens: Tensor, puzzle_emb: Tensor | None, cos: Tensor,
                         sin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.input_embedding(tokens, puzzle_emb)
        rope = Rope(cos, sin, rope_groups(self.config))
        T, n = self.config.T, self.config.n
        with torch.no_grad():
            for _ in range(T - 1):
                for _ in range(n):
                    z = self._perturb(self.net(z + y + x, rope))
                y = self.net(y + z, rope)
        for _ in range(n):
            z = self._perturb(self._call_net(self.net, z + y + x, rope))
        y = self._call_net(self.net, y + z, rope)
        logits, q_logits = self.heads(y)
        return y.detach(), z.detach(), logits, q_logits


# ---------------------------------------------------------------------------------------------
# HRM


class HRM(RecursiveModel):
    """Hierarchical Reasoning Model: separate fast (L) and slow (H) modules.

    One supervision step (forward), with z_H = carry.y and z_L = carry.z:
        T (H_cycles) times:  n (L_cycles) times z_L = L(z_L + z_H + x);  z_H = H(z_H + z_L)
    Only the very last L call and the last H call get gradients (the "one-step gradient").
    q_head on z_H at prefix position 0 gives (halt, continue) logits; HRM halts when halt > continue
    and trains continue toward ``losses.q_continue_target`` from a second forward pass.
    """

    def __init__(self, config: ModelConfig, dtype: torch.dtype | None = None, seed: int = 0):
        if config.arch != "hrm":
            raise ValueError(f"HRM needs arch 'hrm', got {config.arch!r}")
        super().__init__(config, dtype, seed)
        self.L_net = Reasoner(config, config.layers, self._generator)
        self.H_net = Reasoner(config, config.layers, self._generator)
        del self._generator

    def supervision_step(self, y: Tensor, z: Tensor, tokens: Tensor, puzzle_emb: Tensor | None, cos: Tensor,
                         sin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.input_embedding(tokens, puzzle_emb)
        rope = Rope(cos, sin, rope_groups(self.config))
        z_H, z_L = y, z
        T, n = self.config.T, self.config.n
        with torch.no_grad():
            for h in range(T):
                for l in range(n):
                    if h < T - 1 or l < n - 1:
                        z_L = self._perturb(self.L_net(z_L + z_H + x, rope))
                if h < T - 1:
                    z_H = self.H_net(z_H + z_L, rope)
        z_L = self._perturb(self._call_net(self.L_net, z_L + z_H + x, rope))
        z_H = self._call_net(self.H_net, z_H + z_L, rope)
        logits, q_logits = self.heads(z_H)
        return z_H.detach(), z_L.detach(), logits, q_logits


# ---------------------------------------------------------------------------------------------
# ACT halting rule


def halt_decision(q_logits: Tensor, steps: Tensor, config: ModelConfig, training: bool,
                  generator: torch.Generator | None = None, slots: tuple[int, int] | None = None) -> Tensor:
    """Which slots halt after the supervision step just taken. (B, 2), (B,) int -> (B,) bool.

    ``steps`` counts the supervision steps taken so far *including* this one. Every slot halts at
    ``config.max_steps``. In evaluation that is the only rule. In training a slot also halts when
    q_halt > 0 (TRM) or q_halt > q_continue (HRM), but with probability ``halt_exploration`` it must
    first reach a minimum drawn uniformly from 2..max_steps. ``generator`` must live on q's device.

    ``slots = (first, total)``: these B slots are ``first..first+B-1`` of a global batch of ``total``.
    The exploration draws are made for the whole global batch (from a generator seeded alike on every
    rank) and sliced, so a data-parallel run explores exactly as one process with the same batch.
    """
    halted = steps >= config.max_steps
    if not training or config.max_steps == 1:
        return halted
    q_halt, q_continue = q_logits[:, 0], q_logits[:, 1]
    wants = q_halt > q_continue if config.arch == "hrm" else q_halt > 0
    halted = halted | wants
    B, dev = q_logits.shape[0], q_logits.device
    first, total = slots if slots is not None else (0, B)
    explore = torch.rand(total, device=dev, generator=generator)[first:first + B] < config.halt_exploration
    min_steps = torch.randint(2, config.max_steps + 1, (total,), device=dev, generator=generator)[first:first + B]
    return halted & (steps >= torch.where(explore, min_steps, torch.zeros_like(min_steps)))


# ---------------------------------------------------------------------------------------------
# Construction


def build_model(config: ModelConfig, dtype: torch.dtype | None = None, seed: int = 0,
                device: torch.device | str | None = None) -> RecursiveModel:
    """The network for ``config`` (fp32 weights, deterministic init from ``seed``), on ``device``."""
    model: RecursiveModel = HRM(config, dtype, seed) if config.arch == "hrm" else TRM(config, dtype, seed)
    return model.to(device) if device is not None else model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the initial states are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
