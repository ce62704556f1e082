"""Training throughput benchmark: ``python -m bench.train``.

Times the real ``train_step`` (refill halted slots, one supervision step, AdamATan2 step, puzzle
sign-SGD, EMA) at a preset and reports, per configuration: sample-steps per second (batch x steps /
seconds; one optimizer step is one supervision step of the whole batch), tokens per second (x the
sequence length, prefix included), achieved model FLOP/s from the analytic count
``supervision_step_flops``, model FLOP utilisation against the GPU's dense bf16 peak, and peak
memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS).

The data are synthetic tasks (``arc_data.synthetic``) on the chosen canvas, so any canvas side works
and nothing is downloaded; throughput does not depend on what the grids contain. ``--canvas 16``
or ``20`` measures a smaller canvas (shorter sequences) as a proxy for canvas bucketing. The batch
runs in micro-batches as the preset says (the paper presets: as many as fit the GPU).

    python -m bench.train                                  # trm-arc1 on CUDA, tiny on CPU
    python -m bench.train --preset trm-arc1 --compare-compile
    python -m bench.train --preset tiny --canvas 16 --pos-encoding rope2d --json

Everything a GPU session should measure, within a time budget: ``python -m bench.gpu DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from arc_data.synthetic import synthetic_tasks
from bench.common import device_name, one_process_world, peak_memory, reset_peak_memory, sync
from pretrain.config import DataConfig, ModelConfig
from pretrain.data import PuzzleCatalogue, TrainStream
from pretrain.distributed import default_dtype
from pretrain.hardware import peak_tflops_for
from pretrain.learner import Learner, Slots, train_step
from pretrain.model import count_parameters
from pretrain.presets import RUN_PRESETS, RunConfig

# The largest default batch on a CPU (a GPU takes the preset's batch, in micro-batches that fit).
CPU_DEFAULT_BATCH_CAP = 64


# ---------------------------------------------------------------------------------------------
# FLOP count


def network_call_flops(config: ModelConfig, batch: int, side: int) -> int:
    """Forward FLOPs of one call of the network (``config.layers`` blocks) on ``batch`` sequences.

    Sequence length L = prefix_tokens + side**2, tokens N = batch * L, C hidden, I mlp_inner,
    H heads, D head dim. Per block:
        qkv      C -> 3C        2 * N * C * 3C
        out      C -> C         2 * N * C * C
        gate-up  C -> 2I        2 * N * C * 2I
        down     I -> C         2 * N * I * C
        attention scores q.k^T and the weighted sum of v: 2 * 2 * batch * H * L^2 * D
    TRM-MLP replaces qkv, out and attention by a SwiGLU over the sequence axis applied to each of the
    batch * C channels: gate-up L -> 2J and down J -> L (J = token_mlp_inner), i.e.
        2 * batch * C * L * 2J  +  2 * batch * C * J * L.
    """
    L = config.prefix_tokens + side * side
    N = batch * L
    C, I = config.hidden, config.mlp_inner
    mlp = 2 * N * C * (2 * I) + 2 * N * I * C
    if config.arch == "trm-mlp":
        if side != config.canvas:
            raise ValueError(f"trm-mlp only runs at its full canvas ({config.canvas}), got side {side}")
        J = config.resolved_token_mlp_inner
        mix = 2 * batch * C * L * (2 * J) + 2 * batch * C * J * L
    else:
        H, D = config.heads, config.head_dim
        mix = 2 * N * C * (3 * C) + 2 * N * C * C + 2 * 2 * batch * H * L * L * D
    return config.layers * (mix + mlp)


def supervision_step_flops(config: ModelConfig, batch: int, side: int) -> dict[str, int]:
    """Model FLOPs of one training supervision step of ``batch`` samples on a side x side canvas.

    Counted analytically; a multiply-add is 2 FLOPs. Only matrix products are counted: the linear
    layers and the two attention products (see ``network_call_flops`` for one network call).
    Ignored as small: elementwise work (RMSNorm, RoPE, SiLU, residual adds, softmax), the embedding
    lookup and its scatter-add backward, the loss, and the optimizer, puzzle and EMA updates.
    Backward of a matrix product costs 2x its forward (the gradients of the input and of the weight).

    TRM (and TRM-MLP): one supervision step calls the network T * (n + 1) times (n latent updates and
    one answer update per cycle); only the last cycle's n + 1 calls are in the autograd graph, so
        forward  = T * (n + 1) calls,   backward = 2 * (n + 1) calls.
    HRM: T * n calls of the L module and T calls of the H module forward; only the last L call and the
    last H call are in the graph, so backward = 2 * (one L call + one H call). HRM's train step also
    runs a second forward pass without gradient (the Q-continue target from the next state):
        hrm_q_target = T * n L calls + T H calls + the heads' forward.
    Heads: lm_head C -> V over the side**2 canvas cells (2 * batch * side^2 * C * V) and q_head C -> 2
    at prefix position 0 (2 * batch * C * 2), forward plus backward = 3x their forward.

    Returns the parts and their sum under "total" (all FLOPs for the whole batch, one optimizer step).
    """
    call = network_call_flops(config, batch, side)
    heads_forward = 2 * batch * side * side * config.hidden * config.vocab + 2 * batch * config.hidden * 2
    T, n = config.T, config.n
    if config.arch == "hrm":
        forward = (T * n + T) * call
        backward = 2 * (call + call)  # one L call and one H call; the two modules have the same shape
        hrm_q_target = (T * n + T) * call + heads_forward
    else:
        forward = T * (n + 1) * call
        backward = 2 * (n + 1) * call
        hrm_q_target = 0
    heads = 3 * heads_forward
    total = forward + backward + heads + hrm_q_target
    return {"network_call": call, "forward": forward, "backward": backward, "heads": heads,
            "hrm_q_target": hrm_q_target, "total": total}


# ---------------------------------------------------------------------------------------------
# Measurement


def synthetic_catalogue(canvas: int, num_aug: int, seed: int, count: int = 60) -> tuple[PuzzleCatalogue, DataConfig]:
    """Synthetic tasks whose grids fit ``canvas``, and a matching data config."""
    if canvas < 2:
        raise ValueError(f"canvas side must be at least 2, got {canvas}")
    tasks = synthetic_tasks(count, seed, max_side=min(canvas, 10))
    data = DataConfig(train_sources=(), held_out_sources=(), num_aug=num_aug, canvas=canvas, seed=seed)
    return PuzzleCatalogue(tasks, [], num_aug, seed), data


def _timed_steps(learner: Learner, slots: Slots, stream: TrainStream, count: int,
                 deadline: float = float("inf")) -> tuple[int, float, float]:
    """Run up to ``count`` training steps, fewer once ``deadline`` (perf_counter time) has passed
    (the first always runs). Returns the steps run, their wall seconds and this process's CPU seconds."""
    device = learner.world.device
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < count and (done == 0 or time.perf_counter() < deadline):
        train_step(learner, slots, stream)
        done += 1
    sync(device)
    return done, time.perf_counter() - start, time.process_time() - start_cpu


def bench_one(run: RunConfig, model_config: ModelConfig, canvas: int, batch: int, *, compile: bool, steps: int,
              warmup: int, world, dtype: torch.dtype, num_aug: int = 8, puzzle_ids: int = 0,
              peak_tflops: float | None = None, seed: int = 0, deadline: float = float("inf")) -> dict:
    """Time ``steps`` training steps after ``warmup`` untimed ones, the first of which (compilation
    included) is timed on its own. ``deadline`` (perf_counter time) cuts the timed steps short: the
    row says how many ran."""
    device = world.device
    catalogue, data = synthetic_catalogue(canvas, num_aug, seed)
    optim = dataclasses.replace(run.optim, global_batch=batch)
    learner = Learner(model_config, optim, max(puzzle_ids, catalogue.num_ids), world, dtype, seed, compile=compile,
                      puzzle_storage=run.puzzle_storage)
    stream = TrainStream(catalogue, data)
    slots = learner.new_slots(batch, canvas)
    micro_batch = learner.micro_batch_size(canvas, batch)  # measured now, outside the timed steps
    reset_peak_memory(device)

    # The first step compiles (when compiled): its seconds are the compile cost, apart from the rest.
    _, first_step_s, _ = _timed_steps(learner, slots, stream, min(1, warmup))
    _, rest_s, _ = _timed_steps(learner, slots, stream, warmup - 1, deadline)
    ran, seconds, cpu_seconds = _timed_steps(learner, slots, stream, steps, deadline)

    peak, memory_kind = peak_memory(device)
    flops = supervision_step_flops(model_config, batch, canvas)
    achieved = flops["total"] * ran / seconds
    seq_len = model_config.prefix_tokens + canvas * canvas
    return {
        "device": device_name(device), "dtype": str(learner.model.compute_dtype).removeprefix("torch."),
        "preset": run.name, "arch": model_config.arch, "canvas": canvas, "seq_len": seq_len,
        "pos_encoding": model_config.pos_encoding, "batch": batch, "micro_batch": micro_batch, "compile": compile,
        "activation_checkpointing": optim.activation_checkpointing,
        "parameters": count_parameters(learner.model), "puzzle_ids": learner.puzzles.num_ids,
        "steps": ran, "steps_requested": steps, "warmup": warmup, "first_step_s": round(first_step_s, 3),
        "warmup_s": round(first_step_s + rest_s, 3), "seconds": round(seconds, 4),
        "sample_steps_per_s": batch * ran / seconds, "tokens_per_s": batch * ran * seq_len / seconds,
        # This process's CPU time (all its threads): on a shared CPU it moves less than the wall time.
        "cpu_seconds_per_sample_step": cpu_seconds / (batch * ran),
        "flops_per_step": flops["total"], "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak_tflops if device.type == "cuda" else None,
        "mfu": achieved / (peak_tflops * 1e12) if device.type == "cuda" and peak_tflops else None,
        "peak_memory_bytes": peak, "memory_kind": memory_kind, "torch": torch.__version__,
        # CPU figures suffer when other processes share the cores: the 1-minute load average at the end.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def format_table(rows: list[dict]) -> str:
    head = ("preset", "canvas", "pos", "batch", "micro", "compile", "dtype", "sample-steps/s", "tokens/s", "TFLOP/s",
            "MFU", "peak mem", "warmup s")
    lines = [head]
    for r in rows:
        mem = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB" + (" (RSS)" if r["memory_kind"].startswith("cpu") else "")
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append((r["preset"], str(r["canvas"]), r["pos_encoding"], str(r["batch"]), str(r["micro_batch"]),
                      "on" if r["compile"] else "off",
                      r["dtype"], f"{r['sample_steps_per_s']:,.2f}", f"{r['tokens_per_s']:,.0f}",
                      f"{r['achieved_tflops']:.3f}", mfu, mem, f"{r['warmup_s']:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(RUN_PRESETS), help="default: trm-arc1 on CUDA, tiny on CPU")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--batch", type=int,
                        help=f"global batch (default: the preset's, at most {CPU_DEFAULT_BATCH_CAP} on a CPU)")
    parser.add_argument("--micro-batch", help="samples per forward/backward pass: N or 'auto' (default: the preset's)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the supervision step (default: the preset's; on CUDA, not on a CPU)")
    parser.add_argument("--compare-compile", action="store_true", help="run without and with torch.compile")
    parser.add_argument("--canvas", type=int, nargs="+",
                        help="canvas side(s) to measure (default: the preset's); not for trm-mlp")
    parser.add_argument("--pos-encoding", choices=("rope1d", "rope2d"), help="default: the preset's")
    parser.add_argument("--num-aug", type=int, default=8, help="augmented versions per synthetic task (default 8)")
    parser.add_argument("--puzzle-ids", type=int, default=0,
                        help="size the puzzle table to this many rows (e.g. 876000 for ARC-AGI-1's real "
                             "table, for peak memory); default: the synthetic catalogue's")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU on unlisted GPUs")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="compute dtype (default: bfloat16 on a GPU that has it, else float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per configuration on stdout")
    args = parser.parse_args(argv)
    if args.micro_batch is not None and args.micro_batch != "auto" and not args.micro_batch.isdigit():
        parser.error(f"--micro-batch: expected a positive integer or 'auto', got {args.micro_batch!r}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with one_process_world(args.device, "benchmark") as world:
        device = world.device
        on_gpu = device.type == "cuda"
        run = RUN_PRESETS[args.preset or ("trm-arc1" if on_gpu else "tiny")]()
        model_config = run.model
        if args.pos_encoding:
            model_config = model_config.replace(pos_encoding=args.pos_encoding)
        optim = {"micro_batch": int(args.micro_batch) if (args.micro_batch or "").isdigit() else args.micro_batch,
                 "activation_checkpointing": True if args.activation_checkpointing else None}
        run.optim = dataclasses.replace(run.optim, **{k: v for k, v in optim.items() if v is not None})
        batch = args.batch or (run.optim.global_batch if on_gpu else min(run.optim.global_batch, CPU_DEFAULT_BATCH_CAP))
        canvases = args.canvas or [run.data.canvas]
        if model_config.arch == "trm-mlp" and any(c != model_config.canvas for c in canvases):
            print(f"note: trm-mlp's sequence MLP is sized for its {model_config.canvas}x{model_config.canvas} "
                  f"canvas and cannot run on another; skipping canvas {[c for c in canvases if c != model_config.canvas]}",
                  file=sys.stderr)
            canvases = [c for c in canvases if c == model_config.canvas]
        default_compile = run.compile if run.compile is not None else on_gpu
        compiles = [False, True] if args.compare_compile else [default_compile if args.compile is None else args.compile]
        dtype = getattr(torch, args.dtype) if args.dtype else default_dtype(device)
        name = device_name(device)
        peak = args.peak_tflops or (peak_tflops_for(name) if on_gpu else None)
        if on_gpu and peak is None:
            print(f"note: no bf16 peak known for {name!r}; pass --peak-tflops for MFU", file=sys.stderr)

        rows = []
        for canvas in canvases:
            config = model_config if canvas == model_config.canvas else model_config.replace(canvas=canvas)
            for compile in compiles:
                print(f"{run.name}: canvas {canvas}, {config.pos_encoding}, batch {batch}, compile {compile}, "
                      f"{args.warmup} warm-up + {args.steps} timed steps on {name} ...", file=sys.stderr, flush=True)
                row = bench_one(run, config, canvas, batch, compile=compile, steps=args.steps,
                                warmup=args.warmup, world=world, dtype=dtype, num_aug=args.num_aug,
                                puzzle_ids=args.puzzle_ids, peak_tflops=peak, seed=args.seed)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
        if rows:
            table = format_table(rows)
            print(("\n" if not args.json else "") + table, file=sys.stderr if args.json else sys.stdout)
            print("peak mem: " + ("torch.cuda.max_memory_allocated" if on_gpu else
                                  "peak RSS of this process since it started (cumulative over configurations)")
                  + "; TFLOP/s from supervision_step_flops", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
