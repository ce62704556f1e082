"""Export a run's network for submission: ``python -m pretrain.export RUN_DIR [--out DIR]``.

Writes ``model.safetensors`` (the EMA network's weights and buffers, plus ``puzzle_mean``, the mean
of the trained puzzle rows that new tasks start from) and ``model.json`` (the model config as a
plain dict). No optimizer, no puzzle table: a few tens of MB at the paper size, loadable on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
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


class ExportError(ValueError):
    """An exported network that cannot be loaded; the message is one line naming the file."""


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
    """The exported network on ``device`` and its mean puzzle row. Raises ``ExportError`` (one line)
    when ``model.json`` or ``model.safetensors`` is missing, malformed or does not match the other."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = read_model_config(folder / CONFIG)
    weights = folder / WEIGHTS
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise ExportError(f"{weights}: no such file") from None
    except Exception as error:  # safetensors raises its own error type for a truncated or foreign file
        raise ExportError(f"{weights}: cannot be read as safetensors ({_first_line(error)})") from None
    if PUZZLE_MEAN not in tensors:
        raise ExportError(f"{weights}: no '{PUZZLE_MEAN}' tensor; export it with python -m pretrain.export")
    puzzle_mean = tensors.pop(PUZZLE_MEAN)
    model = build_model(config, dtype=dtype)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ExportError(f"{weights}: does not match {CONFIG} ({_first_line(error)})") from None
    return model.to(device), puzzle_mean.to(device)


# The JSON types each ModelConfig field accepts, by its annotation; a field with another annotation
# is left to ModelConfig's own checks.
_JSON_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "int | None": (int, type(None))}


def read_model_config(path: Path) -> ModelConfig:
    """``model.json`` as a ``ModelConfig``, each field's presence and JSON type checked first so that a
    hand-edited or truncated file gets one line naming the field instead of a ``TypeError``."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file; is this an exported network (python -m pretrain.export)?") from None
    except orjson.JSONDecodeError as error:
        raise ExportError(f"{path}: is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: is not a JSON object of model config fields")
    for field in dataclasses.fields(ModelConfig):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field.name not in data:
            if required:
                raise ExportError(f"{path}: field '{field.name}' is missing")
            continue
        allowed = _JSON_TYPES.get(str(field.type))
        value = data[field.name]
        wrong_bool = isinstance(value, bool) and bool not in (allowed or ())
        if allowed is not None and (wrong_bool or not isinstance(value, allowed)):
            raise ExportError(f"{path}: field '{field.name}' is {value!r}, not {str(field.type)}")
    try:
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as error:
        raise ExportError(f"{path}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


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
