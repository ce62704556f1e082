"""Pretrain TRM or HRM: ``python -m pretrain --preset trm-arc1`` (one process) or
``torchrun --nproc-per-node 4 -m pretrain --preset trm-arc1`` (data parallel, one or many nodes).

Run folder (``--out``, default ``runs/PRESET``): ``checkpoint.pt`` and ``slots-rank*.pt`` (resume with
``--resume``), ``metrics.jsonl``, ``curves.png``, ``config.json``. Export the network for submission
with ``python -m pretrain.export RUN_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import orjson

from arc_data.grids import ArcDataError
from pretrain import checkpoint
from pretrain.config import OPTIMIZERS
from pretrain.distributed import setup_world, teardown_world
from pretrain.model import build_model, count_parameters
from pretrain.presets import RUN_PRESETS, RunConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(RUN_PRESETS), default="tiny")
    parser.add_argument("--out", type=Path, help="run folder (default runs/PRESET)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter count, then exit")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--global-batch", type=int, help="samples per optimizer step over all ranks")
    parser.add_argument("--lr", type=float, help="network learning rate")
    parser.add_argument("--optimizer", choices=OPTIMIZERS,
                        help="adam-atan2 (the presets'), or muon for the recursive blocks' matrices")
    parser.add_argument("--lr-cooldown-steps", type=int,
                        help="decay the learning rates linearly to zero over the run's last N steps (default 0: "
                             "constant after warm-up, as in the papers); with --resume and a larger --steps, "
                             "a finished constant-rate run gets a cool-down")
    parser.add_argument("--num-aug", type=int, help="augmented versions per task")
    parser.add_argument("--train-sources", nargs="+", help="task sources trained on with their test pairs")
    parser.add_argument("--held-out-sources", nargs="*", help="task sources whose test inputs are held out")
    parser.add_argument("--evaluated-sources", nargs="*",
                        help="tasks you will evaluate the network on: a training or held-out source that "
                             "overlaps them (by id or content) is refused")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the supervision step (default: on CUDA, not on a CPU)")
    parser.add_argument("--micro-batch", type=_micro_batch,
                        help="samples per forward/backward pass on each rank, gradients accumulated over the "
                             "batch: N or 'auto' (the most that fit the device; the paper presets' default)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute each network call in backward instead of keeping its activations")
    parser.add_argument("--puzzle-table", choices=("device", "host"),
                        help="where the puzzle-embedding table lives (default device; host: pinned host memory, "
                             "only the rows of a step on the device)")
    parser.add_argument("--bucket-canvas", action="store_true",
                        help="train each task at the smallest canvas that holds it (needs --pos-encoding rope2d)")
    parser.add_argument("--pos-encoding", choices=("rope1d", "rope2d"), help="position encoding of the network")
    parser.add_argument("--max-steps", type=int, help="supervision steps per sample (the ACT limit)")
    parser.add_argument("--improvement-targets", action="store_true",
                        help="Deep Improvement Supervision: each supervision step trained towards its own target, "
                             "from the input to the answer, and every sample takes all --max-steps steps")
    return parser.parse_args(argv)


def _micro_batch(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return int(text)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    config = RUN_PRESETS[args.preset]()
    top = {"steps": args.steps, "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every}
    config = dataclasses.replace(config, **{k: v for k, v in top.items() if v is not None})
    if args.compile is not None:
        config.compile = args.compile
    if args.puzzle_table:
        config.puzzle_storage = args.puzzle_table
    if args.pos_encoding:
        config.model = config.model.replace(pos_encoding=args.pos_encoding)
    if args.max_steps is not None:
        config.model = config.model.replace(max_steps=args.max_steps)
    optim = {"global_batch": args.global_batch, "lr": args.lr, "optimizer": args.optimizer,
             "lr_cooldown_steps": args.lr_cooldown_steps,
             "micro_batch": args.micro_batch,
             "activation_checkpointing": True if args.activation_checkpointing else None,
             "improvement_targets": True if args.improvement_targets else None}
    config.optim = dataclasses.replace(config.optim, **{k: v for k, v in optim.items() if v is not None})
    data = {"num_aug": args.num_aug, "bucket_canvas": True if args.bucket_canvas else None,
            "train_sources": tuple(args.train_sources) if args.train_sources is not None else None,
            "held_out_sources": tuple(args.held_out_sources) if args.held_out_sources is not None else None,
            "evaluated_sources": tuple(args.evaluated_sources) if args.evaluated_sources is not None else None}
    config.data = dataclasses.replace(config.data, **{k: v for k, v in data.items() if v is not None})
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = resolve_config(args)
    except ValueError as error:  # a setting the config refuses (e.g. --max-steps 0)
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(orjson.dumps(config.to_dict(), option=orjson.OPT_INDENT_2).decode())
        print(f"parameters: {count_parameters(build_model(config.model)):,} (the puzzle table is extra)")
        return 0
    out = args.out or Path("runs") / config.name
    if checkpoint.has_checkpoint(out) and not args.resume:
        print(f"error: {out} already holds a checkpoint; pass --resume or another --out", file=sys.stderr)
        return 2
    world = setup_world(args.device)
    try:
        from pretrain.trainer import Trainer  # heavy imports only when training
        trainer = Trainer(config, out, world)
        if args.resume and trainer.resume() and world.is_main:
            print(f"resumed {out} at step {trainer.learner.step}")
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_bytes(orjson.dumps(config.to_dict(), option=orjson.OPT_INDENT_2))
        trainer.train()
    except (ArcDataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MemoryError as error:  # not even one sample per micro-batch fits (measured, or halved down to 1)
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        teardown_world()
    return 0


if __name__ == "__main__":
    sys.exit(main())
