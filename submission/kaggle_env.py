"""Where we are on Kaggle: input and working folders, the test challenges file, rerun or not.

The roots come from ``ARC_KAGGLE_INPUT`` and ``ARC_KAGGLE_WORKING`` when set (a rehearsal points
them at temporary folders), else Kaggle's ``/kaggle/input`` and ``/kaggle/working``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHALLENGES_NAME = "arc-agi_test_challenges.json"


@dataclass(frozen=True)
class KagglePaths:
    input_root: Path
    working_root: Path


def kaggle_paths() -> KagglePaths:
    return KagglePaths(Path(os.environ.get("ARC_KAGGLE_INPUT", "/kaggle/input")),
                       Path(os.environ.get("ARC_KAGGLE_WORKING", "/kaggle/working")))


def is_kaggle() -> bool:
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ or kaggle_paths().input_root.is_dir()


def is_competition_rerun() -> bool:
    """Kaggle sets this during the rerun on the hidden tasks; the visible test file is a placeholder."""
    return bool(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))


def find_test_challenges(input_root: Path) -> Path | None:
    found = sorted(Path(input_root).glob(f"*/{CHALLENGES_NAME}")) + sorted(Path(input_root).glob(CHALLENGES_NAME))
    return found[0] if found else None
