"""Where things are on Kaggle's notebook machine, and whether this is one.

``make_submission`` calls these to find the hidden test file and where to write, and
``submission.kaggle`` formats the same names into the notebook it builds. Kaggle's own paths and flags
are in ``pretrain.kaggle_facts``; the two roots can be overridden by this project's environment
variables, so a local rehearsal can point them at temporary folders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pretrain.kaggle_facts import (COMPETITION_GLOBS, INPUT_ROOT, RERUN_ENV, RUN_TYPE_ENV, SUBMISSION_FILE,
                                   TEST_CHALLENGES, WORKING_ROOT)

INPUT_ENV = "ARC_KAGGLE_INPUT"  # overrides the read-only input root (competition data, attached datasets)
WORKING_ENV = "ARC_KAGGLE_WORKING"  # overrides the writable working folder (the submission goes here)


@dataclass(frozen=True)
class KagglePaths:
    input_root: Path  # read-only on Kaggle: competition data and attached datasets, one folder each
    working_root: Path  # writable; Kaggle scores the submission file found here

    @property
    def submission(self) -> Path:
        return self.working_root / SUBMISSION_FILE


def kaggle_paths(environ: Mapping[str, str] | None = None) -> KagglePaths:
    env = os.environ if environ is None else environ
    return KagglePaths(input_root=Path(env.get(INPUT_ENV) or INPUT_ROOT),
                       working_root=Path(env.get(WORKING_ENV) or WORKING_ROOT))


def is_kaggle(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return RUN_TYPE_ENV in env or Path(INPUT_ROOT).is_dir()


def is_competition_rerun(environ: Mapping[str, str] | None = None) -> bool:
    """True while Kaggle scores the notebook on the hidden tasks (not on the visible placeholder)."""
    env = os.environ if environ is None else environ
    return env.get(RERUN_ENV, "").strip().lower() not in ("", "0", "false")


def find_test_challenges(input_root: Path) -> Path | None:
    """The competition's test challenges under ``input_root``: one of the competition layouts first
    (``COMPETITION_GLOBS``, in order), so a copy inside some attached dataset never wins over the
    competition's own folder; else the shallowest match at any depth. None when absent."""
    root = Path(input_root)
    if not root.is_dir():
        return None
    for pattern in COMPETITION_GLOBS:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    deeper = sorted(root.rglob(TEST_CHALLENGES), key=lambda path: (len(path.parts), str(path)))
    return deeper[0] if deeper else None
