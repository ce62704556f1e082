"""A device dry run without a GPU: pretraining's ``train_step``, one test-time fine-tuning step and one
prediction batch, with the network, optimizer, puzzle table and batches on the ``meta`` device.

    python -m bench.dry_run [--preset tiny]

On a CPU-only torch, meta stands in for an accelerator: tensors carry shapes and dtypes but no data,
so a step of any size runs in seconds. It is strict where a GPU is, and this run turns each case into
a line of the report instead of an exception, then carries on:

- a device mismatch: a host tensor in an operation on device tensors (a 0-d host tensor is left
  alone: a GPU takes it as a scalar). Reported with the project line; the tensor is moved to meta.
- a host sync: an operation that needs a device value on the host (``.item()``, ``bool()``,
  ``.cpu()``, ``.numpy()``, ``torch.unique``, a boolean mask, ...). Reported with the project line;
  meta has no value, so a stand-in is handed back: True for booleans (every slot halted, so the
  refill path runs), zero for numbers, the largest possible size for a data-dependent shape. The
  syncs the code means to make are ``INTENDED_SYNCS``, each with its reason; any other is unexpected.

Mismatches already reported to the owners of the code are ``KNOWN_MISMATCHES``: listed on every
run, not counted, until fixed. Host-to-device copies of 256 MiB or more are listed too.

It also counts the bytes of live meta tensors (once per storage) and prints each phase's peak next
to ``pretrain.memory``'s estimate of a training step's activations at the same canvas and batch.
The last line sums it up; the exit status is 1 on any mismatch or unexpected sync.

What does not run on meta is said in the output (``SKIPPED``: the numba encoding stays on the host,
nothing is compiled, one rank and no collective, no CUDA-only branch), and so is what stands in for
what meta lacks (``STAND_INS``: a host generator for the halting draws, the fused attention kernel a
GPU would pick where meta alone would take the math path, the host values of the syncs).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

import submission.finetune as finetune
from arc_data.synthetic import synthetic_tasks
from pretrain.config import ModelConfig
from pretrain.data import PuzzleCatalogue, TrainStream
from pretrain.distributed import World
from pretrain.learner import Learner, train_step
from pretrain.memory import measure_bytes_per_sample
from pretrain.model import build_model
from pretrain.presets import RUN_PRESETS, RunConfig
from submission.config import FINETUNE_PRESETS, FinetuneConfig
from submission.network import Network

META = torch.device("meta")
ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
aten = torch.ops.aten

# Training steps run: the second one holds the optimizer state the first one created (the steady state).
TRAIN_STEPS = 2
# The fine-tuning preset dry-run with each pretraining preset's network (default: the competition's).
FINETUNE_FOR = {"tiny": "cpu", "small-arc": "cpu"}
DEFAULT_FINETUNE = "kaggle-nvarc"
# Augmented versions per task in the training stream's catalogue: building the preset's 1000 per
# task (deduplicated) is about 20 s of CPU for ARC-AGI-1 and changes nothing on the device but the
# puzzle table's size, which is set to tasks x the preset's versions instead (an upper bound of the
# deduplicated count: 800,000 rows for ARC-AGI-1's 730,082).
STREAM_VERSIONS = 8
# Host-to-device copies at least this large are listed: a table built on the host and copied over
# costs host memory and transfer time where allocating it on the device would not.
LARGE_COPY_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Place:
    """A function of the project: its file relative to the repository root, and its name."""

    path: str
    function: str


@dataclass(frozen=True)
class IntendedSync:
    place: Place
    reason: str


# The host syncs the code means to make. A sync anywhere else is unexpected (and fails the run).
INTENDED_SYNCS = (
    IntendedSync(Place("pretrain/learner.py", "refill"),
                 "the halted flags of every rank decide which slots take fresh samples: one small copy per step"),
    IntendedSync(Place("pretrain/puzzle_embedding.py", "sum_rows"),
                 "torch.unique: the number of distinct puzzle rows in the batch sizes the sparse sign-SGD update"),
    IntendedSync(Place("pretrain/evaluation.py", "predict"),
                 "the log-probabilities and halting logits go to the host for decoding and voting, once per batch"),
)


@dataclass(frozen=True)
class KnownMismatch:
    place: Place
    cause: str  # and the fix, which belongs to that file's owners


# Mismatches found by this run and reported to the owners of the code: listed on every run, not
# counted, until fixed (the run then says to remove the entry). None at present.
KNOWN_MISMATCHES: tuple[KnownMismatch, ...] = ()


@dataclass(frozen=True)
class Location:
    path: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} in {self.function}"

    @property
    def place(self) -> Place:
        return Place(self.path, self.function)


OUTSIDE = Location("<outside the project>", 0, "?")


@lru_cache(maxsize=None)
def _project_path(filename: str) -> str | None:
    """``filename`` relative to the repository root when it is project code (not this module, not a library)."""
    path = Path(filename).resolve()
    if path == Path(__file__).resolve() or ROOT not in path.parents or "site-packages" in path.parts:
        return None
    return path.relative_to(ROOT).as_posix()


def project_location() -> Location:
    """The innermost frame of project code on the stack: the line that asked for the operation."""
    frame = sys._getframe(1)
    while frame is not None:
        path = _project_path(frame.f_code.co_filename)
        if path is not None:
            return Location(path, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return OUTSIDE


@dataclass
class Findings:
    """What the checks saw, each (location, what) with how many times."""

    mismatches: Counter = field(default_factory=Counter)
    syncs: Counter = field(default_factory=Counter)
    large_copies: Counter = field(default_factory=Counter)

    def unexpected_syncs(self) -> list[tuple[Location, str]]:
        intended = {s.place for s in INTENDED_SYNCS}
        return [key for key in self.syncs if key[0].place not in intended]


# ---------------------------------------------------------------------------------------------
# Host syncs: what meta cannot answer, and the stand-in handed back instead

def host_stand_in(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """A host tensor for a device value: True for booleans (every slot counts as halted), else zero."""
    if dtype == torch.bool:
        return torch.ones(shape, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


NOT_A_SYNC = object()


def _scalar(func, args, kwargs):
    return host_stand_in(torch.Size(), args[0].dtype).item()


def _to_host(func, args, kwargs):
    x, device = args[0], kwargs.get("device")
    if device is None or torch.device(device).type != "cpu":
        return NOT_A_SYNC
    return host_stand_in(x.shape, kwargs.get("dtype") or x.dtype)


def _copy_to_host(func, args, kwargs):
    destination, source = args[0], args[1]
    if destination.is_meta:
        return NOT_A_SYNC
    return destination.copy_(host_stand_in(source.shape, source.dtype))


def _unique(func, args, kwargs):
    """Every value distinct: the largest result torch.unique can give."""
    x = args[0]
    count = x.numel()
    return (x.flatten().clone(), torch.arange(count, device=META).view(x.shape),
            torch.ones(count, dtype=torch.long, device=META))


def _nonzero(func, args, kwargs):
    x = args[0]
    return torch.zeros(x.numel(), x.dim(), dtype=torch.long, device=META)


def _masked_select(func, args, kwargs):
    x, mask = args[0], args[1]
    return torch.empty(torch.broadcast_shapes(x.shape, mask.shape).numel(), dtype=x.dtype, device=META)


def _true(func, args, kwargs):
    return True


def _is_mask(index) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def _masked_index(func, args, kwargs):
    """Indexing by a boolean mask needs its count of True: taken as all True."""
    indices = args[1]
    if not any(_is_mask(i) for i in indices):
        return NOT_A_SYNC
    expanded = []
    for index in indices:
        if _is_mask(index):
            expanded += torch.zeros(index.numel(), index.dim(), dtype=torch.long, device=META).unbind(1)
        else:
            expanded.append(index)
    return func(args[0], expanded, *args[2:], **kwargs)


SYNC_STAND_INS: dict = {
    aten._local_scalar_dense.default: _scalar,  # .item(), bool(), int(), float()
    aten._to_copy.default: _to_host,  # .cpu(), .to("cpu"), .tolist()
    aten.copy_.default: _copy_to_host,
    aten._unique2.default: _unique,
    aten.unique_consecutive.default: _unique,
    aten.nonzero.default: _nonzero,
    aten.masked_select.default: _masked_select,
    aten.equal.default: _true,
    aten.is_nonzero.default: _true,
    aten.index.Tensor: _masked_index,
    aten.index_put_.default: _masked_index,
    aten.index_put.default: _masked_index,
    aten._index_put_impl_.default: _masked_index,
}
# Copies between devices are what moving data means; they are no mismatch.
COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default, aten._copy_from_and_resize.default}


def _tensors(args, kwargs) -> list[torch.Tensor]:
    return [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


def _host_tensors_in_device_op(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Host tensors of more than 0 dimensions among device ones (a GPU takes a 0-d one as a scalar)."""
    if not any(t.is_meta for t in tensors):
        return []
    return [t for t in tensors if t.device.type == "cpu" and t.dim() > 0]


def _onto_meta(x):
    return x.to(META) if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() > 0 else x


def _describe(tensors: list[torch.Tensor]) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors)


class DeviceChecks(TorchDispatchMode):
    """Reports host tensors mixed into meta operations, host syncs and large host-to-device copies,
    and carries on past each."""

    def __init__(self, findings: Findings):
        super().__init__()
        self.findings = findings

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in COPIES:
            self._note_large_copy(func, args, kwargs)
        tensors = _tensors(args, kwargs)
        if not any(t.is_meta for t in tensors):
            return func(*args, **kwargs)
        stand_in = SYNC_STAND_INS.get(func)
        result = stand_in(func, args, kwargs) if stand_in is not None else NOT_A_SYNC
        if result is not NOT_A_SYNC:
            self.findings.syncs[(project_location(), str(func.overloadpacket))] += 1
            return result
        if func not in COPIES and (host := _host_tensors_in_device_op(tensors)):
            what = f"{func.overloadpacket} takes host tensor(s) {_describe(host)} among meta ones"
            self.findings.mismatches[(project_location(), what)] += 1
            args, kwargs = tree_map(_onto_meta, (args, kwargs))
        return func(*args, **kwargs)

    def _note_large_copy(self, func, args, kwargs) -> None:
        if func is aten._to_copy.default:
            source, target = args[0], torch.device(kwargs.get("device") or args[0].device)
        else:  # copy_(target, source); _copy_from(source, target)
            source, target = (args[1], args[0].device) if func is aten.copy_.default else (args[0], args[1].device)
        if source.device.type == "cpu" and target.type == "meta" and source.nbytes >= LARGE_COPY_BYTES:
            self.findings.large_copies[(project_location(), f"{source.nbytes / GIB:.2f} GiB")] += 1


@contextmanager
def numpy_of_meta_is_a_sync(findings: Findings) -> Iterator[None]:
    """``Tensor.numpy`` refuses a meta tensor before any operation runs: count it as a sync here."""
    real = torch.Tensor.numpy

    def numpy(self, *, force: bool = False):
        if not self.is_meta:
            return real(self, force=force)
        findings.syncs[(project_location(), "Tensor.numpy")] += 1
        return host_stand_in(self.shape, self.dtype).numpy()

    torch.Tensor.numpy = numpy
    try:
        yield
    finally:
        torch.Tensor.numpy = real


# ---------------------------------------------------------------------------------------------
# Stand-ins for what meta lacks: a random generator, and a GPU's choice of attention kernel


class _AnyGenerator(type(torch._C.Generator)):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, torch._C.Generator)


class _HostGenerator(torch._C.Generator, metaclass=_AnyGenerator):
    """torch.Generator, made on the host when asked for on meta (which has none): meta's random
    operations accept a host generator. Every generator still counts as a torch.Generator."""

    def __new__(cls, device="cpu"):
        device = torch.device(device)
        return torch._C.Generator("cpu" if device.type == "meta" else device)


@contextmanager
def host_generators() -> Iterator[None]:
    real = torch.Generator
    torch.Generator = _HostGenerator
    try:
        yield
    finally:
        torch.Generator = real


@contextmanager
def fused_attention() -> Iterator[None]:
    """Attention on meta as a CUDA GPU runs it: the fused kernel (flash for 16-bit inputs, memory-
    efficient for fp32), which keeps no L x L scores. Meta would take the math path, which keeps them
    (in fp32) for backward and would make the memory peaks several times what a GPU needs."""
    real = F.scaled_dot_product_attention

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if not q.is_meta or attn_mask is not None or kwargs:
            return real(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, **kwargs)
        if q.dtype in (torch.float16, torch.bfloat16):
            return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
        log_sumexp = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        return aten._scaled_dot_product_efficient_attention(q, k, v, None, log_sumexp, dropout_p, is_causal,
                                                            scale=scale)[0]

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


# ---------------------------------------------------------------------------------------------
# Memory: the bytes of live meta tensors, once per storage


class LiveBytes(TorchDispatchMode):
    """Bytes of the live meta storages (a storage dies when its last tensor, view or saved copy does),
    and the peak of each phase."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}  # storage id -> bytes
        self.now = 0
        self.open: set[str] = set()  # the phases being measured now (a step inside its phase)
        self.starts: dict[str, int] = {}
        self.peaks: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.is_meta:
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, size = storage._cdata, storage.nbytes()
        if key not in self.live:
            weakref.finalize(storage, self._release, key)
        self.now += size - self.live.get(key, 0)
        self.live[key] = size
        for phase in self.open:
            self.peaks[phase] = max(self.peaks[phase], self.now)

    def _release(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def begin(self, phase: str) -> None:
        gc.collect()  # what the last phase left in reference cycles is gone before this one counts
        self.open.add(phase)
        self.starts[phase] = self.peaks[phase] = self.now

    def end(self, *phases: str) -> None:
        self.open.difference_update(phases)

    def resident_and_own(self, phase: str) -> tuple[int, int]:
        """Bytes live when ``phase`` began, and its peak above them."""
        return self.starts.get(phase, 0), self.peaks.get(phase, 0) - self.starts.get(phase, 0)


# ---------------------------------------------------------------------------------------------
# The three phases


def _meta_world() -> World:
    return World(rank=0, size=1, local_rank=0, device=META)


@dataclass
class Phase:
    name: str
    step: str  # the part of the phase measured on its own (a LiveBytes phase)
    step_in_words: str  # "its last step", "the prediction batch"
    what: str  # one line: what ran
    side: int = 0
    micro_batch: int = 0
    model: ModelConfig | None = None  # for pretrain.memory's estimate; None: it has none for this phase


def pretraining(run: RunConfig, dtype: torch.dtype, live: LiveBytes) -> Phase:
    """``TRAIN_STEPS`` steps of the real ``train_step``, set up as the trainer does, on the largest canvas."""
    data = dataclasses.replace(run.data, num_aug=min(run.data.num_aug, STREAM_VERSIONS))
    catalogue = PuzzleCatalogue.from_config(data)
    rows = len(catalogue.groups) * run.data.num_aug if data.num_aug < run.data.num_aug else catalogue.num_ids
    side = max(catalogue.canvases()) if data.bucket_canvas else data.canvas
    stream = TrainStream(catalogue, data, canvas=side if data.bucket_canvas else None)
    live.begin("train")
    learner = Learner(run.model, run.optim, rows, _meta_world(), dtype, run.seed, compile=False,
                      puzzle_storage=run.puzzle_storage)
    slots = learner.new_slots(run.optim.global_batch, side)
    micro = learner.micro_batch_size(side, slots.local_batch)
    for step in range(TRAIN_STEPS):
        if step == TRAIN_STEPS - 1:
            live.begin("train step")
        train_step(learner, slots, stream)
    live.end("train", "train step")
    exact = "" if rows == catalogue.num_ids else f" (tasks x {run.data.num_aug}: an upper bound of the deduplicated)"
    what = (f"{TRAIN_STEPS} train_step, batch {run.optim.global_batch} (micro-batch {micro}), canvas {side}, "
            f"{rows:,} puzzle rows{exact}, EMA {'on' if run.optim.ema_decay else 'off'}")
    return Phase("train", "train step", "its last step", what, side, micro, run.model)


def _finetune_config(name: str, tests: int) -> FinetuneConfig:
    """The preset cut to one full fine-tuning step and one full prediction batch."""
    config = FINETUNE_PRESETS[name]()
    views = max(1, config.inference_batch // tests)
    return dataclasses.replace(config, steps=1, embedding_steps=0, views=views, num_aug=max(config.num_aug, views),
                               compile=False)


@contextmanager
def _on_first_call(module, name: str, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` when ``module.name`` is first called: how a phase boundary inside
    ``solve_task`` (its first training step, its first prediction) is found."""
    real, called = getattr(module, name), []

    def wrapper(*args, **kwargs):
        if not called:
            called.append(True)
            action()
        return real(*args, **kwargs)

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, real)


def _begin_prediction(live: LiveBytes) -> None:
    live.end("fine-tune", "fine-tune step")
    live.begin("predict")


def finetuning_and_prediction(run: RunConfig, preset: str, dtype: torch.dtype, live: LiveBytes) -> list[Phase]:
    """``solve_task`` as a GPU worker of the submission runs it, from a network as a checkpoint gives
    it (not fresh: its canvas is the network's unless its positions allow bucketing)."""
    task = synthetic_tasks(1, seed=0, max_side=min(10, run.model.canvas))[0]
    config = _finetune_config(preset, len(task.test_inputs))
    network = dataclasses.replace(Network.fresh_init(run.model, run.seed), fresh=False)
    network_config = network.with_overrides(config.model_overrides).config
    side = finetune.task_canvas(task, network, config)
    live.begin("fine-tune")
    with (_on_first_call(finetune, "train_step", lambda: live.begin("fine-tune step")),
          _on_first_call(finetune, "predict", lambda: _begin_prediction(live))):
        outcome = finetune.solve_task(task, network, config, META, math.inf, dtype)
    live.end("predict")
    if outcome.failed:
        raise RuntimeError(f"the fine-tuning dry run failed: {outcome.note}")
    tuned = (f"{outcome.finetune_steps} step of solve_task, batch {config.batch} "
             f"(micro-batch {outcome.micro_batch}), canvas {side}")
    predicted = f"one batch of {outcome.inference_batch} views, {network_config.max_steps} supervision steps"
    return [Phase("fine-tune", "fine-tune step", "its step", tuned, side, outcome.micro_batch, network_config),
            Phase("predict", "predict", "the prediction batch", predicted)]


# ---------------------------------------------------------------------------------------------
# Report


def activation_estimate(config: ModelConfig, side: int, batch: int, dtype: torch.dtype) -> float:
    """``pretrain.memory``'s bytes saved for backward by one training step of ``batch`` samples,
    measured on the host with T=1: the first T-1 cycles run without gradient and save nothing, so the
    count is the same (as ``python -m pretrain.memory --last-cycle-only``)."""
    probe = dataclasses.replace(config, T=1, max_steps=1)
    key = (repr(probe), side, dtype)
    if key not in _MEASURED:  # the fine-tuned network often has the pretrained one's shape: measured once
        _MEASURED[key] = measure_bytes_per_sample(build_model(probe, dtype=dtype), side, "saved_tensors",
                                                  samples=(1, 2))
    return _MEASURED[key].fixed + _MEASURED[key].per_sample * batch


_MEASURED: dict = {}


def _gib(size: float) -> str:
    return f"{size / GIB:.3f} GiB"


def memory_line(phase: Phase, live: LiveBytes, dtype: torch.dtype) -> str:
    resident, own = live.resident_and_own(phase.step)
    line = (f"  {phase.name}: peak {_gib(live.peaks.get(phase.name, 0))}; {_gib(resident)} resident before "
            f"{phase.step_in_words}, which adds {_gib(own)}")
    if phase.model is None:
        return line + "; pretrain.memory has no estimate for inference"
    estimate = activation_estimate(phase.model, phase.side, phase.micro_batch, dtype)
    return line + (f"; pretrain.memory: {_gib(estimate)} saved for backward "
                   f"(canvas {phase.side}, micro-batch {phase.micro_batch})")


SKIPPED = (
    "numba encoding: runs on the host with real samples; the slots copy them to meta",
    "torch.compile: not run (meta has no kernels to generate); the eager step runs",
    "collectives (NCCL): one rank, no process group",
    "branches taken on CUDA only: the slots' pinned non-blocking copies, the auto micro-batch measurement "
    "(off a GPU it is the whole batch), emptying the allocator's cache",
)
STAND_INS = (
    "halting exploration draws: a host random generator (meta has none)",
    "attention: the fused kernel a GPU picks, in place of meta's math path (see fused_attention)",
    "device values: each host sync gets one (booleans True, so every slot halts and is refilled each step; "
    "numbers zero)",
)


def _finding_lines(title: str, counter: Counter, note: Callable[[Location], str] = lambda _: "") -> list[str]:
    return [f"{title}: {where}: {what} (x{times}){note(where)}" for (where, what), times in counter.items()]


def _sync_note(where: Location) -> str:
    reason = next((s.reason for s in INTENDED_SYNCS if s.place == where.place), None)
    return f" -- expected: {reason}" if reason else " -- UNEXPECTED"


def _known_note(where: Location) -> str:
    return " -- known, not counted" if any(k.place == where.place for k in KNOWN_MISMATCHES) else ""


def _known_lines(findings: Findings) -> list[str]:
    """The cause of each known mismatch seen, once; and the known ones no longer seen."""
    seen = {where.place for where, _ in findings.mismatches}
    return [f"known mismatch in {k.place.path} {k.place.function}: {k.cause}" if k.place in seen else
            f"known mismatch no longer seen (remove it from KNOWN_MISMATCHES): {k.place.path} {k.place.function}"
            for k in KNOWN_MISMATCHES]


@dataclass
class Report:
    lines: list[str]
    findings: Findings
    peaks: dict[str, int]  # phase -> peak bytes of live meta tensors

    @property
    def mismatches(self) -> list[tuple[Location, str]]:
        """Mismatches not in ``KNOWN_MISMATCHES``."""
        known = {k.place for k in KNOWN_MISMATCHES}
        return [key for key in self.findings.mismatches if key[0].place not in known]

    @property
    def unexpected_syncs(self) -> list[tuple[Location, str]]:
        return self.findings.unexpected_syncs()

    @property
    def exit_status(self) -> int:
        return 1 if self.mismatches or self.unexpected_syncs else 0


def _report(findings: Findings, live: LiveBytes, phases: list[Phase], dtype: torch.dtype, header: str) -> Report:
    lines = [header] + [f"skipped: {s}" for s in SKIPPED] + [f"stand-in: {s}" for s in STAND_INS]
    lines += [f"ran {p.name}: {p.what}" for p in phases]
    lines += _finding_lines("mismatch", findings.mismatches, _known_note) + _known_lines(findings)
    lines += _finding_lines("host sync", findings.syncs, _sync_note)
    lines += _finding_lines("large host-to-device copy", findings.large_copies)
    lines += ["memory of live meta tensors (pretrain.memory counts a training step's activations only):"]
    lines += [memory_line(p, live, dtype) for p in phases]
    report = Report(lines, findings, {p.name: live.peaks.get(p.name, 0) for p in phases})
    peak = {name: f"{size / GIB:.3f}" for name, size in report.peaks.items()}
    lines.append(f"device dry run: {len(report.mismatches)} mismatches, {len(report.unexpected_syncs)} unexpected "
                 f"host syncs, peak {peak['train']} GiB (train), {peak['fine-tune']} GiB (fine-tune), "
                 f"{peak['predict']} GiB (predict)")
    return report


def dry_run(preset: str = "tiny", finetune_preset: str | None = None,
            progress: Callable[[str], None] = lambda line: None) -> Report:
    """Run the three phases on meta under the checks; returns the report. ``progress`` gets a line
    as each part ends (so a run cut short still says how far it got)."""
    run = RUN_PRESETS[preset]()
    finetune_preset = finetune_preset or FINETUNE_FOR.get(preset, DEFAULT_FINETUNE)
    dtype = getattr(torch, run.model.forward_dtype)
    findings, live = Findings(), LiveBytes()
    with host_generators(), fused_attention(), numpy_of_meta_is_a_sync(findings), live, DeviceChecks(findings):
        phases = [pretraining(run, dtype, live)]
        progress(f"ran {phases[0].name}: {phases[0].what}")
        phases += finetuning_and_prediction(run, finetune_preset, dtype, live)
        progress(f"ran fine-tune and predict: {len(findings.mismatches)} mismatches, {len(findings.syncs)} host "
                 "syncs so far; measuring pretrain.memory's estimates on the host")
    header = (f"device dry run on meta: preset {preset} ({run.model.arch}, hidden {run.model.hidden}), "
              f"fine-tuning preset {finetune_preset}, {dtype}")
    return _report(findings, live, phases, dtype, header)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dry_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(RUN_PRESETS), default="tiny",
                        help="pretraining preset (default tiny)")
    parser.add_argument("--finetune-preset", choices=sorted(FINETUNE_PRESETS),
                        help=f"fine-tuning preset (default: cpu for the CPU presets, else {DEFAULT_FINETUNE})")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - start:3.0f} s] {line}", file=sys.stderr, flush=True)

    report = dry_run(args.preset, args.finetune_preset, progress)
    print("\n".join(report.lines[:-1]))
    print(f"took {time.perf_counter() - start:.0f} s")
    print(report.lines[-1])
    return report.exit_status


if __name__ == "__main__":
    raise SystemExit(main())
