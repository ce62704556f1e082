"""Where things are on Kaggle's notebook machine, in one place.

``make_submission`` reads these to find the hidden test file and where to write, and
``submission.kaggle`` formats the same names into the notebook it builds. The two roots come from
environment variables so a local rehearsal can point them at temporary folders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INPUT_ENV = "ARC_KAGGLE_INPUT"  # overrides the read-only input root (competition data, attached datasets)
WORKING_ENV = "ARC_KAGGLE_WORKING"  # overrides the writable working folder (the submission goes here)
DEFAULT_INPUT = "/kaggle/input"
DEFAULT_WORKING = "/kaggle/working"
RUN_TYPE_ENV = "KAGGLE_KERNEL_RUN_TYPE"  # set by Kaggle in every notebook session ("Interactive", "Batch")
RERUN_ENV = "KAGGLE_IS_COMPETITION_RERUN"  # set by Kaggle only while it reruns the notebook on the hidden set
TEST_CHALLENGES = "arc-agi_test_challenges.json"
SUBMISSION_FILE = "submission.json"


@dataclass(frozen=True)
class KagglePaths:
    input_root: Path  # read-only on Kaggle: competition data and attached datasets, one folder each
    working_root: Path  # writable; Kaggle scores the submission file found here

    @property
    def submission(self) -> Path:
        return self.working_root / SUBMISSION_FILE


def kaggle_paths(environ: Mapping[str, str] | None = None) -> KagglePaths:
    env = os.environ if environ is None else environ
    return KagglePaths(input_root=Path(env.get(INPUT_ENV) or DEFAULT_INPUT),
                       working_root=Path(env.get(WORKING_ENV) or DEFAULT_WORKING))


def is_kaggle(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return RUN_TYPE_ENV in env or Path(DEFAULT_INPUT).is_dir()


def is_competition_rerun(environ: Mapping[str, str] | None = None) -> bool:
    """True while Kaggle scores the notebook on the hidden tasks (not on the visible placeholder)."""
    env = os.environ if environ is None else environ
    return env.get(RERUN_ENV, "").strip().lower() not in ("", "0", "false")


# Where a competition's data mounts under the input root: <input>/competitions/<slug>/ (ARC Prize 2026)
# first, then <input>/<slug>/ (2025 and earlier). That order matters: an attached dataset also mounts
# at <input>/<slug>/, and one that carries a copy of the test file (a public notebook's inputs, say)
# must never win over the competition's own folder. The notebook's first cell, which runs before the
# project is installed, is formatted from this same tuple.
COMPETITION_GLOBS = ("competitions/*/" + TEST_CHALLENGES, "*/" + TEST_CHALLENGES)


def find_test_challenges(input_root: Path) -> Path | None:
    """The competition's test challenges under ``input_root``: one of the competition layouts first,
    so a copy inside some attached dataset never wins over the competition's own folder; else the
    shallowest match at any depth. None when absent."""
    root = Path(input_root)
    if not root.is_dir():
        return None
    for pattern in COMPETITION_GLOBS:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    deeper = sorted(root.rglob(TEST_CHALLENGES), key=lambda path: (len(path.parts), str(path)))
    return deeper[0] if deeper else None
