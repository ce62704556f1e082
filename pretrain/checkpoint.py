"""Complete, atomic checkpoints: everything a resumed run needs to continue the same loss curve.

One file per run for what every rank shares (network, EMA, optimizer, puzzle table, step, stream
position, config as a plain dict) and one small file per rank for its persistent batch slots and
random state. Files are written to a temporary name and renamed, so a crash never leaves a torn
checkpoint; everything loads on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SHARED = "checkpoint.pt"


def rank_file(rank: int) -> str:
    return f"slots-rank{rank}.pt"


def save_atomic(obj: object, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / SHARED).exists()
