"""Export a run's network for submission: ``python -m pretrain.export RUN_DIR [--out DIR]``.

Writes ``model.safetensors`` (the EMA network's weights and buffers, plus ``puzzle_mean``, the mean
of the trained puzzle rows that new tasks start from) and ``model.json`` (the model config as a
plain dict). No optimizer, no puzzle table: a few tens of MB at the paper size, loadable on CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
import torch
from safetensors.torch import load_file, save_file

from pretrain import checkpoint
from pretrain.config import ModelConfig
from pretrain.model import RecursiveModel, build_model

WEIGHTS, CONFIG = "model.safetensors", "model.json"
PUZZLE_MEAN = "puzzle_mean"


def export_network(model: RecursiveModel, puzzle_mean: torch.Tensor, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors[PUZZLE_MEAN] = puzzle_mean.detach().cpu().float().contiguous()
    tmp = out_dir / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(out_dir / WEIGHTS)
    (out_dir / CONFIG).write_bytes(orjson.dumps(model.config.to_dict(), option=orjson.OPT_INDENT_2))


def export_run(run_dir: Path, out_dir: Path) -> None:
    state = checkpoint.load(Path(run_dir) / checkpoint.SHARED)
    config = ModelConfig.from_dict(state["config"]["model"])
    model = build_model(config)
    learner = state["learner"]
    model.load_state_dict(learner["ema"] if learner["ema"] is not None else learner["model"])
    export_network(model, learner["puzzles"]["weight"].mean(0), out_dir)


def load_exported(path: Path, device: torch.device | str = "cpu",
                  dtype: torch.dtype | None = None) -> tuple[RecursiveModel, torch.Tensor]:
    """The exported network on ``device`` and its mean puzzle row."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = ModelConfig.from_dict(orjson.loads((folder / CONFIG).read_bytes()))
    tensors = load_file(str(folder / WEIGHTS))
    puzzle_mean = tensors.pop(PUZZLE_MEAN)
    model = build_model(config, dtype=dtype)
    model.load_state_dict(tensors)
    return model.to(device), puzzle_mean.to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/export)")
    args = parser.parse_args(argv)
    if not checkpoint.has_checkpoint(args.run_dir):
        print(f"error: {args.run_dir}: no {checkpoint.SHARED} in this folder", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "export"
    export_run(args.run_dir, out)
    print(f"wrote {out / WEIGHTS} and {out / CONFIG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
