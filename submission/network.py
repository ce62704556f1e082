"""The network every task starts from, and the one way to get it from a checkpoint.

    network = Network.from_checkpoint(path)                      # an export, or an official checkpoint file
    network = Network.from_checkpoint(path, recipe="nvarc-trm-031", sets=["H_cycles=4"])
    network = Network.fresh_init(config)                         # no checkpoint: a fresh initialisation

make_submission, the benchmarks and the Kaggle notebook all load through here. An official TRM/HRM
checkpoint is imported in memory; every problem with a checkpoint raises ``ExportError`` with one
line that names the path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from pretrain.config import ModelConfig
from pretrain.export import CONFIG, ExportError, load_exported
from pretrain.import_official import OfficialImportError, is_official_checkpoint, read_official
from pretrain.model import build_model


@dataclass
class Network:
    """The starting point of every task: a network's weights and the mean of its trained puzzle rows."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    puzzle_mean: torch.Tensor
    fresh: bool  # True: a fresh initialisation (no checkpoint given)
    source: str = "a fresh network"  # where it came from, in words (printed by the commands)

    @classmethod
    def fresh_init(cls, config: ModelConfig, seed: int = 0) -> "Network":
        model = build_model(config, seed=seed)
        return cls(config, model.state_dict(), torch.zeros(config.puzzle_dim), fresh=True)

    @classmethod
    def from_checkpoint(cls, path: Path | str, *, recipe: str | None = None, config: Path | str | None = None,
                        sets: Sequence[str] = ()) -> "Network":
        """The exported network in folder ``path`` (``python -m pretrain.export``), or the official TRM/HRM
        checkpoint file ``path`` read with its all_config.yaml (or ``config``, or a named ``recipe``) and
        ``sets`` (KEY=VALUE changes). Raises ``ExportError`` (one line) on any problem."""
        path = Path(path)
        if not path.exists():
            raise ExportError(f"{path}: no such checkpoint file or folder")
        if is_official_checkpoint(path):
            return cls._from_official(path, recipe, config, sets)
        if recipe or config or sets:
            raise ExportError(f"{path}: --recipe, --config and --set apply only to a checkpoint file of the "
                              "official TRM/HRM code")
        if not (path / CONFIG).exists():
            raise ExportError(f"{path}: is not an exported network (no {CONFIG}; see python -m pretrain.export)")
        model, puzzle_mean = load_exported(path)
        return cls(model.config, model.state_dict(), puzzle_mean, fresh=False, source=f"the exported network {path}")

    @classmethod
    def _from_official(cls, path: Path, recipe: str | None, config: Path | str | None,
                       sets: Sequence[str]) -> "Network":
        try:
            official = read_official(path, config=config, recipe=recipe, sets=sets)
        except OfficialImportError as error:
            raise ExportError(str(error)) from None
        cfg = official.model.config
        source = (f"the official checkpoint {path} ({cfg.arch}, T={cfg.T} n={cfg.n} max_steps={cfg.max_steps}, "
                  f"canvas {cfg.canvas})")
        return cls(cfg, official.model.state_dict(), official.puzzle_mean, fresh=False, source=source)

    def with_overrides(self, overrides: dict) -> "Network":
        """The same weights under test-time model settings (e.g. more cycles, fewer supervision steps)."""
        return dataclasses.replace(self, config=self.config.replace(**overrides)) if overrides else self

    @property
    def can_bucket(self) -> bool:
        """Smaller canvases keep their meaning with 2-D positions, or for a network that never trained."""
        return self.fresh or self.config.pos_encoding == "rope2d"
