"""Export a run's network for submission: ``python -m pretrain.export RUN_DIR [--out DIR]``.

Writes ``model.safetensors`` (the EMA network's weights and buffers, plus ``puzzle_mean``, the mean
of the trained puzzle rows that new tasks start from) and ``model.json`` (the model config as a
plain dict). No optimizer, no puzzle table: a few tens of MB at the paper size, loadable on CPU.

Beside them, ``pretrained_on.json`` records what the network learned from: the run's sources, the ids
of their tasks and the content key (``arc_data.overlap.pair_key``) of every pair it trained on (all
pairs of a training task, the demonstrations of a held-out one). ``make_submission.py`` and the
benchmark read it to refuse scoring a network on tasks it was pretrained on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import torch
from safetensors.torch import load_file, save_file

from arc_data.grids import ArcDataError
from arc_data.overlap import content_keys, pair_key
from arc_data.sources import load_source, new_file_mode
from arc_data.tasks import Task
from pretrain import checkpoint
from pretrain.config import ModelConfig
from pretrain.model import RecursiveModel, build_model

WEIGHTS, CONFIG = "model.safetensors", "model.json"
PUZZLE_MEAN = "puzzle_mean"
PRETRAINED_ON = "pretrained_on.json"


class ExportError(ValueError):
    """An exported network that cannot be loaded; the message is one line naming the file."""


def export_network(model: RecursiveModel, puzzle_mean: torch.Tensor, out_dir: Path,
                   pretrained_on: dict | None = None) -> None:
    """Write the network's two files, and ``pretrained_on.json`` when the record is given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors[PUZZLE_MEAN] = puzzle_mean.detach().cpu().float().contiguous()
    tmp = out_dir / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp))
    tmp.chmod(new_file_mode())  # the writer creates it private; the export is meant to be shared
    tmp.replace(out_dir / WEIGHTS)
    (out_dir / CONFIG).write_bytes(orjson.dumps(model.config.to_dict(), option=orjson.OPT_INDENT_2))
    if pretrained_on is not None:
        (out_dir / PRETRAINED_ON).write_bytes(orjson.dumps(pretrained_on, option=orjson.OPT_INDENT_2))


def export_run(run_dir: Path, out_dir: Path) -> None:
    state = checkpoint.load(Path(run_dir) / checkpoint.SHARED)
    config = ModelConfig.from_dict(state["config"]["model"])
    model = build_model(config)
    learner = state["learner"]
    model.load_state_dict(learner["ema"] if learner["ema"] is not None else learner["model"])
    data = state["config"]["data"]
    record = pretraining_record(data["train_sources"], data["held_out_sources"], learner["step"])
    export_network(model, learner["puzzles"]["weight"].mean(0), out_dir, record)


def pretraining_record(train_sources: Sequence[str], held_out_sources: Sequence[str], steps: int) -> dict:
    """What a network trained on, for ``pretrained_on.json``: the sources as named in the run's config,
    the ids of their tasks, and the content key of every pair it trained on, each with the id of a
    task holding it (every pair of a training task; only the demonstrations of a held-out one)."""
    pairs: dict[str, str] = {}
    ids: set[str] = set()
    for sources, held_out in ((train_sources, False), (held_out_sources, True)):
        for task in (t for source in sources for t in load_source(source)):
            ids.add(task.id)
            trained = list(task.train) + ([] if held_out else list(zip(task.test_inputs, task.test_outputs or ())))
            for grid_in, grid_out in trained:
                pairs.setdefault(pair_key(grid_in, grid_out).hex(), task.id)
    return {"train_sources": list(train_sources), "held_out_sources": list(held_out_sources), "steps": steps,
            "task_ids": sorted(ids), "pairs": dict(sorted(pairs.items()))}


@dataclass(frozen=True)
class PretrainingRecord:
    """``pretrained_on.json`` read back: which tasks a network may not be scored on."""

    path: Path
    task_ids: frozenset[str]
    pairs: dict[bytes, str]  # content key -> id of a pretraining task holding that pair

    def overlap(self, task: Task) -> str | None:
        """How ``task`` was in the pretraining (one phrase), or None."""
        if task.id in self.task_ids:
            return f"task {task.id} was pretrained on"
        shared = sorted(self.pairs[k] for k in content_keys(task) if k in self.pairs)
        return f"task {task.id} shares an example pair with pretraining task {shared[0]}" if shared else None


def read_pretraining_record(folder: Path) -> PretrainingRecord | None:
    """The exported network's ``pretrained_on.json``, or None when it has none (an import of an official
    checkpoint, an export made before the record existed). Raises ``ExportError`` (one line) for a
    malformed file."""
    path = Path(folder) / PRETRAINED_ON
    if not path.is_file():
        return None
    try:
        data = orjson.loads(path.read_bytes())
        ids, pairs = data["task_ids"], data["pairs"]
        return PretrainingRecord(path, frozenset(map(str, ids)), {bytes.fromhex(k): str(v) for k, v in pairs.items()})
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise ExportError(f"{path}: is not a record of pretraining tasks ({_first_line(error)})") from None


def pretrained_tasks(record: PretrainingRecord | None, tasks: Sequence[Task]) -> list[str]:
    """One phrase per task of ``tasks`` that the network was pretrained on (by id or by content)."""
    if record is None:
        return []
    return [found for found in map(record.overlap, tasks) if found is not None]


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


def refuse_pretrained_tasks(checkpoint: Path | None, tasks: list[Task]) -> None:
    """One ``ArcDataError`` line when the exported network was pretrained on any task to be scored (one
    whose solutions are known): by id or by an example pair, as its ``pretrained_on.json`` records.
    Tasks without solutions (Kaggle's hidden set) are never refused."""
    if checkpoint is None or not checkpoint.is_dir():
        return
    found = pretrained_tasks(read_pretraining_record(checkpoint), [t for t in tasks if t.has_solutions])
    if found:
        raise ArcDataError(f"was pretrained on {len(found)} of the {len(tasks)} tasks to score ({found[0]}); a score "
                           "on them measures memory: leave them out, start from another network (make_submission "
                           "--fresh), or pass --allow-pretrained-tasks",
                           source=str(checkpoint))


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
    try:
        export_run(args.run_dir, out)
    except ArcDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out / WEIGHTS}, {out / CONFIG} and {out / PRETRAINED_ON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
