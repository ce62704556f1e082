"""Activation memory of a training step, and the micro-batch that fits a device.

``saved_bytes`` counts what autograd keeps for backward during one training supervision step
(forward, loss, then backward), with ``torch.autograd.graph.saved_tensors_hooks``. Each saved
tensor's *storage* is counted once, so a view that keeps a larger buffer alive (v as a slice of the
qkv output) costs the whole buffer. The count does not depend on the device: it runs on a CPU in
bf16 exactly as it would on a GPU, which is how docs/BENCHMARKS.md measures it.

``measure_bytes_per_sample`` turns two such counts (or, on a GPU, two peaks of allocated memory)
into bytes per sample and a fixed part, and ``auto_micro_batch`` picks the micro-batch that fits
the device's free memory from that measured figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.graph import saved_tensors_hooks

from pretrain.config import ModelConfig
from pretrain.losses import act_loss
from pretrain.model import RecursiveModel, build_model

# Share of the free device memory a micro-batch may use; the rest covers the allocator's
# fragmentation and the temporaries the two-point measurement does not see.
FREE_MEMORY_SHARE = 0.85
# Samples in the two probe steps of a GPU measurement (the difference gives bytes per sample).
PROBE_SAMPLES = (2, 4)


@dataclass(frozen=True)
class StepBytes:
    """Memory of one training supervision step: ``fixed + per_sample * batch`` bytes."""

    per_sample: float
    fixed: float
    method: str  # "saved_tensors" (bytes saved for backward) or "cuda_peak" (peak allocated on the GPU)

    def fits(self, budget_bytes: float) -> int:
        """The most samples whose step stays within ``budget_bytes`` (0 when not even one does)."""
        return max(0, int((budget_bytes - self.fixed) // max(self.per_sample, 1.0)))


def _probe_batch(config: ModelConfig, side: int, batch: int, device: torch.device, *, seed: int):
    g = torch.Generator().manual_seed(seed)
    cells = side * side
    tokens = torch.randint(2, config.vocab, (batch, cells), generator=g).to(device)
    labels = torch.randint(1, config.vocab, (batch, cells), generator=g).to(device)
    puzzle = torch.randn(batch, config.puzzle_dim, generator=g).to(device).requires_grad_(True)
    return tokens, labels, puzzle


def _training_step(model: RecursiveModel, side: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and loss of one supervision step from the initial carry; returns (loss, puzzle leaf)."""
    device = model.y_init.device
    tokens, labels, puzzle = _probe_batch(model.config, side, batch, device, seed=seed)
    model.train()
    carry = model.initial_carry(batch, device, side=side)
    _, logits, q_logits = model(carry, tokens, puzzle)
    steps = torch.ones(batch, dtype=torch.long, device=device)
    halted = torch.zeros(batch, dtype=torch.bool, device=device)
    loss, _ = act_loss(logits, labels, q_logits, halted, steps, batch)
    return loss, puzzle


def saved_bytes(model: RecursiveModel, side: int, batch: int, seed: int = 0) -> int:
    """Bytes autograd holds for backward after the forward of one training supervision step of
    ``batch`` samples on a side x side canvas (distinct storages of every saved tensor)."""
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = _training_step(model, side, batch, seed)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def _cuda_peak_bytes(model: RecursiveModel, side: int, batch: int, seed: int) -> int:
    device = model.y_init.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    loss, _ = _training_step(model, side, batch, seed)
    loss.backward()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    model.zero_grad(set_to_none=True)
    del loss
    return peak


def measure_bytes_per_sample(model: RecursiveModel, side: int, method: str | None = None, *,
                             samples: tuple[int, int] = PROBE_SAMPLES, seed: int = 0) -> StepBytes:
    """Bytes per sample of one training step at this canvas, from two probe steps of ``samples``.

    ``method`` "cuda_peak" (the default on a GPU) measures the peak of allocated memory, temporaries
    included; "saved_tensors" (the default elsewhere) counts what is saved for backward.
    """
    device = model.y_init.device
    method = method or ("cuda_peak" if device.type == "cuda" else "saved_tensors")
    measure = _cuda_peak_bytes if method == "cuda_peak" else saved_bytes
    small, large = samples
    a, b = measure(model, side, small, seed), measure(model, side, large, seed)
    per_sample = (b - a) / (large - small)
    return StepBytes(per_sample=per_sample, fixed=max(0.0, a - per_sample * small), method=method)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (at least 1): equal micro-batches,
    so a compiled step sees one shape."""
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def auto_micro_batch(model_config: ModelConfig, side: int, batch: int, device: torch.device | str,
                     dtype: torch.dtype, *, budget_bytes: float | None = None,
                     activation_checkpointing: bool = False) -> int:
    """The micro-batch for ``batch`` samples per step at this canvas: all of them when they fit.

    On a GPU the budget is ``FREE_MEMORY_SHARE`` of the free memory now (call it once the learner and
    its batch slots are allocated) and the bytes per sample are measured on the device with a probe
    network of the same shape, run eagerly: a compiled step may keep a little more or less, which
    the share of free memory left over has to cover (to be checked on a GPU: the report's compiled
    rows give peak memory next to the micro-batch chosen). On a CPU without an explicit ``budget_bytes`` the whole batch is used;
    with one, the bytes saved for backward are measured instead (how the tests check the choice).
    The result divides ``batch`` so every micro-batch has the same shape.
    """
    device = torch.device(device)
    if device.type != "cuda" and budget_bytes is None:
        return batch
    if budget_bytes is None:
        free, _ = torch.cuda.mem_get_info(device)
        # Blocks the caching allocator holds but does not use are free for this process too.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        budget_bytes = FREE_MEMORY_SHARE * (free + cached)
    probe = build_model(model_config, dtype=dtype, device=device)
    probe.activation_checkpointing = activation_checkpointing
    cost = measure_bytes_per_sample(probe, side)
    del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    fit = cost.fits(budget_bytes)
    if fit < 1:
        raise MemoryError(f"one sample on a {side}x{side} canvas needs about {cost.per_sample / 2**20:.0f} MiB "
                          f"plus {cost.fixed / 2**20:.0f} MiB, more than the {budget_bytes / 2**20:.0f} MiB available")
    return largest_divisor_at_most(batch, fit)


def compiled_weight_casts(config: ModelConfig, side: int, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Casts of parameters in the compiled forward graph of one training supervision step.

    Traced with AOT autograd (no code generation) so it runs anywhere: ``casts`` cast nodes that
    read a parameter, of ``weights`` distinct parameters, moving ``bytes`` (read fp32, write the
    compute dtype). Inductor keeps these nodes as they are (a matrix product cannot fuse its
    operand's cast), so this is what the compiled step does.
    """
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    found: dict[str, int] = {}

    def forward_compiler(graph_module, example_inputs):
        inputs = {node: value for node, value in zip(
            (n for n in graph_module.graph.nodes if n.op == "placeholder"), example_inputs)}
        casts = [n for n in graph_module.graph.nodes if n.op == "call_function" and n.args and n.args[0] in inputs
                 and ("convert_element_type" in str(n.target) or "_to_copy" in str(n.target))
                 and inputs[n.args[0]].dtype == torch.float32 and inputs[n.args[0]].numel() > 1]
        found.update(casts=len(casts), weights=len({n.args[0] for n in casts}),
                     bytes=sum(inputs[n.args[0]].numel() * (4 + dtype.itemsize) for n in casts))
        return make_boxed_func(graph_module.forward)

    torch._dynamo.reset()
    model = build_model(config, dtype=dtype)
    model.compile_step(backend=aot_autograd(fw_compiler=forward_compiler,
                                            bw_compiler=lambda graph_module, _: make_boxed_func(graph_module.forward)))
    loss, _ = _training_step(model, side, 1, seed=0)
    loss.backward()
    torch._dynamo.reset()
    return found


# ---------------------------------------------------------------------------------------------
# Command line: python -m pretrain.memory


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from pretrain.config import DTYPES, MODEL_PRESETS

    parser = argparse.ArgumentParser(prog="python -m pretrain.memory",
                                     description="Bytes saved for backward per sample of one training supervision step.")
    parser.add_argument("--model", choices=sorted(MODEL_PRESETS), default="trm-att")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--canvas", type=int, nargs="+", default=[8, 12, 16, 20, 24, 30])
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--last-cycle-only", action="store_true",
                        help="run T=1: the first T-1 cycles run without gradient and save nothing, so the "
                             "count is the same and a CPU gets there T times sooner")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--weight-casts", action="store_true",
                        help="instead: count the parameter casts in the compiled step's forward graph")
    args = parser.parse_args(argv)
    config = MODEL_PRESETS[args.model]().replace(pos_encoding="rope2d")
    if args.weight_casts:
        casts = compiled_weight_casts(config.replace(canvas=max(args.canvas[0], config.canvas)), args.canvas[0],
                                      getattr(torch, args.dtype))
        calls = config.T * (config.n + 1) * (2 if config.arch == "hrm" else 1)
        print(json.dumps(casts) if args.json else
              f"{args.model} {args.dtype}: {casts['casts']} parameter casts of {casts['weights']} parameters in the "
              f"compiled forward of one supervision step ({calls} network calls), "
              f"{casts['bytes'] / 2**20:.1f} MiB moved")
        return 0
    if args.last_cycle_only:
        config = config.replace(T=1)
    dtype = getattr(torch, args.dtype)
    for side in args.canvas:
        model = build_model(config.replace(canvas=max(side, config.canvas)), dtype=dtype)
        model.activation_checkpointing = args.activation_checkpointing
        cost = measure_bytes_per_sample(model, side, "saved_tensors", samples=(1, 2))
        row = {"model": args.model, "dtype": args.dtype, "canvas": side, "activation_checkpointing":
               args.activation_checkpointing, "bytes_per_sample": cost.per_sample, "fixed_bytes": cost.fixed}
        print(json.dumps(row) if args.json else
              f"{args.model} {args.dtype} canvas {side:2d}: {cost.per_sample / 2**20:8.2f} MiB per sample "
              f"(+ {cost.fixed / 2**20:.2f} MiB per step)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
