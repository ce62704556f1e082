"""Model configuration: one dataclass, presets as plain functions.

The presets reproduce the papers' networks (parameter counts checked in tests/test_model.py):

=================  ==========  =============================================================
preset             parameters  what it is
=================  ==========  =============================================================
``trm-att``         6,829,058  TRM-Att, 2 blocks, T=3, n=4 (the official ARC command; ARC-AGI-1 and -2 alike)
``trm-mlp``        18,801,666  TRM-MLP: a SwiGLU over the 916-long sequence axis replaces attention
``hrm``            27,276,290  HRM: separate 4-block L and H modules, H_cycles = L_cycles = 2
``tiny``           (small)     CPU tests and debugging
``cpu-small``      (small)     the CPU network: fine-tuned fresh per task, or pretrained on small ARC tasks

Model presets name networks; the pretraining runs that train them (``trm-arc1``, ``small-arc``, ...)
are in ``pretrain/presets.py``.
=================  ==========  =============================================================

The puzzle-embedding table is not part of these counts (it lives outside the network, see
``pretrain/puzzle_embedding.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from arc_data.encoding import CANVAS, VOCAB_SIZE

ARCHS = ("trm", "trm-mlp", "hrm")
POS_ENCODINGS = ("rope1d", "rope2d")
DTYPES = ("float32", "bfloat16", "float16", "float64")
OPTIMIZERS = ("adam-atan2", "muon")


def swiglu_inner(width: int, expansion: float = 4.0, multiple: int = 256) -> int:
    """The reference's SwiGLU inner size: ``round(expansion * width * 2/3)`` rounded up to ``multiple``.

    512 -> 1536 (the channel MLP), 916 -> 2560 (TRM-MLP's sequence-mixing MLP).
    """
    inner = round(expansion * width * 2 / 3)
    return multiple * math.ceil(inner / multiple)


@dataclass
class ModelConfig:
    arch: str  # "trm" (TRM-Att), "trm-mlp" (sequence-mixing SwiGLU instead of attention), or "hrm"
    hidden: int = 512  # width of every token's state
    heads: int = 8  # attention heads; head dim = hidden // heads
    mlp_inner: int = 1536  # inner size of the channel SwiGLU (gate and up are each this wide)
    token_mlp_inner: int | None = None  # trm-mlp only: inner size of the sequence SwiGLU; None = swiglu_inner(seq_len)
    layers: int = 2  # blocks per network (TRM: the one network; HRM: each of the L and H modules)
    T: int = 3  # TRM: outer cycles (y updates) per supervision step; HRM: H_cycles
    n: int = 4  # TRM: z updates per outer cycle; HRM: L_cycles per H cycle
    prefix_tokens: int = 16  # positions before the canvas; the puzzle embedding fills the first of them
    puzzle_dim: int = 512  # size of one puzzle-embedding row; > hidden spreads it over several prefix tokens
    vocab: int = VOCAB_SIZE  # token vocabulary (PAD, EOS, 10 colours)
    canvas: int = CANVAS  # largest canvas side; the sequence is prefix_tokens + canvas**2 long
    max_steps: int = 16  # supervision steps per sample (ACT limit)
    halt_exploration: float = 0.1  # probability that a sample must first reach a random minimum of 2..max_steps steps
    rope_base: float = 10000.0  # RoPE base
    pos_encoding: str = "rope1d"  # "rope1d": flattened positions 0..seq_len-1; "rope2d": (row, column), see model.py
    norm_eps: float = 1e-5  # RMSNorm epsilon
    forward_dtype: str = "bfloat16"  # compute dtype (weights stay fp32); callers on CPU pass "float32"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.forward_dtype not in DTYPES:
            raise ValueError(f"forward_dtype must be one of {DTYPES}, got {self.forward_dtype!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.pos_encoding == "rope2d" and self.head_dim % 4:
            raise ValueError(f"rope2d needs a head dim divisible by 4, got {self.head_dim}")
        if self.pos_encoding == "rope1d" and self.head_dim % 2:
            raise ValueError(f"rope1d needs an even head dim, got {self.head_dim}")
        if self.puzzle_tokens > self.prefix_tokens:
            raise ValueError(
                f"a {self.puzzle_dim}-d puzzle embedding needs {self.puzzle_tokens} prefix tokens of width "
                f"{self.hidden}, but prefix_tokens is {self.prefix_tokens}")
        if self.T < 1 or self.n < 1 or self.layers < 1 or self.max_steps < 1:
            raise ValueError("T, n, layers and max_steps must all be at least 1")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def seq_len(self) -> int:
        """Tokens per sample at the full canvas: prefix plus canvas cells."""
        return self.prefix_tokens + self.canvas * self.canvas

    @property
    def puzzle_tokens(self) -> int:
        """Prefix tokens the puzzle embedding occupies (it is zero-padded to a multiple of hidden)."""
        return math.ceil(self.puzzle_dim / self.hidden) if self.puzzle_dim > 0 else 0

    @property
    def resolved_token_mlp_inner(self) -> int:
        return self.token_mlp_inner if self.token_mlp_inner is not None else swiglu_inner(self.seq_len)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class DataConfig:
    train_sources: tuple[str, ...] = ("bundled:arc-agi-1/train",)  # every pair, test pairs included, trains
    held_out_sources: tuple[str, ...] = ("bundled:arc-agi-1/eval",)  # demonstrations train; test inputs held out
    # Tasks that will be evaluated after pretraining: a training or held-out source that overlaps them
    # (by id or content, arc_data.overlap) is refused, so they cannot leak into the network.
    evaluated_sources: tuple[str, ...] = ()
    num_aug: int = 1000  # augmented versions per task (identity included), before deduplication
    translate: bool = True  # a fresh random offset per training pair
    canvas: int = 30  # canvas side of the token rows (the largest canvas when bucketing)
    bucket_canvas: bool = False  # each task at the smallest of CANVAS_BUCKETS that holds its grids (needs rope2d)
    seed: int = 0  # augmentation tables and the sample stream


@dataclass
class OptimConfig:
    global_batch: int = 768  # samples per optimizer step, summed over ranks
    # "adam-atan2" (the official recipe's); "muon": torch.optim.Muon for the blocks' 2-D weights, its
    # step scaled to AdamW's RMS so that lr means the same, and AdamATan2 for everything else.
    optimizer: str = "adam-atan2"
    lr: float = 1e-4  # network learning rate after warm-up
    lr_warmup_steps: int = 2000  # linear warm-up, then constant (the puzzle lr warms up too)
    lr_cooldown_steps: int = 0  # linear decay to zero over the run's last N steps (0: constant to the end)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    puzzle_lr: float = 1e-2  # sign-SGD on the puzzle rows
    puzzle_weight_decay: float = 0.1
    ema_decay: float = 0.999  # EMA of the network used for evaluation and export; 0 turns it off
    train_network: bool = True  # False: only the puzzle rows learn (embedding-only fine-tuning)
    # Samples per forward/backward pass (gradients accumulate over the local batch): None the whole
    # local batch at once; an int; or "auto", the most that fit the device's free memory (measured,
    # see pretrain/memory.py; the whole batch on a CPU). Results do not depend on it.
    micro_batch: int | str | None = None
    activation_checkpointing: bool = False  # recompute each network call in backward instead of keeping activations
    # Deep Improvement Supervision (arXiv 2511.16886), off in the official recipe: supervision step k of
    # max_steps is trained towards a target with about k / max_steps of the answer's changed cells turned
    # (losses.improvement_targets), and every sample takes all max_steps steps (no learned halting).
    improvement_targets: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.micro_batch is None or self.micro_batch == "auto"
                or (isinstance(self.micro_batch, int) and self.micro_batch >= 1)):
            raise ValueError(f"micro_batch must be a positive integer, 'auto' or None, got {self.micro_batch!r}")


def parse_setting(item: str, flag: str = "--set") -> tuple[str, Any]:
    """One ``KEY=VALUE`` item of a command's ``flag``, as (key, value). VALUE is read as JSON (``4``,
    ``1e-3``, ``true``, ``[1, 2]``, ``{"T": 4}``), ``none`` or ``null`` as None, ``True``/``False`` in
    any case as booleans, and anything else as text. Raises ValueError without ``=`` or a key."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
    text = text.strip()
    words = {"none": None, "null": None, "true": True, "false": False}
    if text.lower() in words:
        return key, words[text.lower()]
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text


class SettingError(ValueError):
    """A ``KEY=VALUE`` setting that names no field or gives a value the field refuses."""


def replaced_fields(config, changes: dict, what: str, flag: str = "--set"):
    """``config`` (a dataclass) with ``changes``, every key checked against its fields; a SettingError
    names ``flag``, the command's option that gave them."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise SettingError(f"{flag}: {', '.join(unknown)} is not a field of {what} (known: {', '.join(sorted(fields))})")
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as error:
        raise SettingError(f"{flag}: {error}") from None


def tiny() -> ModelConfig:
    """CPU tests and debugging: forward + backward of a batch of 8 well under a second."""
    return ModelConfig(arch="trm", hidden=64, heads=4, mlp_inner=192, layers=2, T=2, n=2, prefix_tokens=4,
                       puzzle_dim=64, canvas=10, max_steps=4, forward_dtype="float32")


def cpu_small() -> ModelConfig:
    """The network a 2-core CPU fine-tunes per task (fresh, or pretrained with the ``small-arc`` run preset).

    2-D RoPE, so positions mean the same on every bucketed canvas. One supervision step: a fresh
    network given a few hundred steps learns several times faster per optimizer step without deep
    supervision (measured on the synthetic flip and colour-map tasks, see docs/BENCHMARKS.md).
    """
    return ModelConfig(arch="trm", hidden=64, heads=4, mlp_inner=192, layers=2, T=2, n=2, prefix_tokens=4,
                       puzzle_dim=64, canvas=30, max_steps=1, pos_encoding="rope2d", forward_dtype="float32")


def trm_att() -> ModelConfig:
    """TRM-Att as in the paper, with n = 4 as in the official ARC command (ARC-AGI-1 and -2 alike)."""
    return ModelConfig(arch="trm", T=3, n=4)


def trm_mlp() -> ModelConfig:
    """TRM-MLP: attention replaced by a SwiGLU over the (fixed, 916-long) sequence axis."""
    return ModelConfig(arch="trm-mlp", T=3, n=4)


def hrm() -> ModelConfig:
    """HRM: 4-block L and H modules, H_cycles = L_cycles = 2, one prefix token for the puzzle embedding."""
    return ModelConfig(arch="hrm", layers=4, T=2, n=2, prefix_tokens=1)


MODEL_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny,
    "cpu-small": cpu_small,
    "trm-att": trm_att,
    "trm-mlp": trm_mlp,
    "hrm": hrm,
}
