"""What a build is made of and what the other modules agree on: the folders, the slugs, the markers
(Kaggle's own facts, the competitions and the machine among them, are in ``pretrain.kaggle_facts``).

A build is four folders, each ready for the ``kaggle`` CLI: ``code/`` (the project source and its
wheel), ``weights/`` (the exported network), ``wheels/`` (the packages Kaggle's image lacks, for
every Python it may run) and ``notebook/`` (the notebook and its ``kernel-metadata.json``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from pretrain.kaggle_facts import COMPETITIONS, KAGGLE_GPUS, Competition
from submission.config import KAGGLE_RERUN_PRESET

CODE_SLUG, WEIGHTS_SLUG, WHEELS_SLUG = "arc-trm-code", "arc-trm-weights", "arc-trm-wheels"
KERNEL_SLUG = "arc-trm-submission"
NOTEBOOK_FILE = "submission.ipynb"
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
WEIGHT_FILES = ("model.safetensors", "model.json")  # what pretrain.export writes
WHEELHOUSE_MARKER = "arc-trm-wheelhouse.json"  # lets the notebook find the wheels however Kaggle mounts them
# In code/: what the build chose for the run (the preset, the GPUs it expects, the build's id). The
# notebook reads it on Kaggle; push and rehearse read the local copy.
BUILD_FILE = "arc-trm-build.json"
CODE_WHEEL_GLOB = "arc_trm-*.whl"
USER_PLACEHOLDER = "YOUR-KAGGLE-USERNAME"

# The make_submission preset a build runs by default: the one make_submission itself picks on Kaggle's
# rerun when given none. The notebook passes the build's preset explicitly, so the pushed run, the
# rehearsal and the scored rerun all run the same one.
DEFAULT_PRESET = KAGGLE_RERUN_PRESET

# The notebook's first cell prints "GPUs: N" (N from nvidia-smi, 0 when it fails); push refuses a run
# with fewer than the preset expects, and the rehearsal says how many it saw.
GPU_LINE = re.compile(r"^GPUs: (\d+)\s*$", re.MULTILINE)

# Every notebook cell that fails prints this (and the step and the error) instead of raising: an
# exception would end the notebook and make the whole entry a scoring error, while the fallback file
# written by the first cell still scores. The rehearsal and push search the log for it.
FAILED_MARK = "ARC_NOTEBOOK_FAILED"
# The last cell prints this when the file on disk is valid for every task of the challenges file.
VALID_MARK = "ARC_SUBMISSION_VALID"
# The notebook's whole budget in seconds, set only by the rehearsal (--time-limit): the run cell gives
# make_submission what is left of it. On Kaggle it is unset and make_submission's own default holds.
NOTEBOOK_SECONDS_ENV = "ARC_NOTEBOOK_SECONDS"

BAD_INPUT = 2


class PackagingError(RuntimeError):
    """A build, rehearsal or push cannot go on; the message is one line."""


class CheckFailed(PackagingError):
    """The notebook ran but failed a check (a failure mark, a kill, an invalid or mostly fallback file)."""


@dataclass(frozen=True)
class Layout:
    """The four folders of a build."""
    root: Path

    @property
    def code(self) -> Path:
        return self.root / "code"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def notebook(self) -> Path:
        return self.root / "notebook"

    def datasets(self) -> dict[str, Path]:
        return {CODE_SLUG: self.code, WEIGHTS_SLUG: self.weights, WHEELS_SLUG: self.wheels}


def expected_gpus(preset: str) -> int:
    """GPUs a preset is sized for: the 4x L4 machine for the Kaggle presets; none for kaggle-placeholder
    (a short run that proves the notebook works) and the others (cpu, synthetic), which run anywhere."""
    return KAGGLE_GPUS if preset.startswith("kaggle-") and preset != "kaggle-placeholder" else 0


def gpus_in_log(log: str) -> int | None:
    """The GPU count the notebook printed (its first "GPUs: N" line), or None when it printed none."""
    match = GPU_LINE.search(log)
    return int(match.group(1)) if match else None


def read_build_file(layout: Layout) -> dict:
    """The build's choices (``BUILD_FILE`` in code/); one line when it is missing or broken."""
    path = layout.code / BUILD_FILE
    try:
        info = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise PackagingError(f"{path}: cannot be read ({error}); run build again") from None
    if not (isinstance(info, dict) and isinstance(info.get("preset"), str) and isinstance(info.get("gpus"), int)
            and isinstance(info.get("build"), str)):
        raise PackagingError(f"{path}: not a build file of this version (no preset, gpus or build); run build again")
    return info


def check_competition(slug: str) -> Competition:
    if slug not in COMPETITIONS:
        raise PackagingError(f"unknown competition {slug!r}; known: {', '.join(COMPETITIONS)}")
    return COMPETITIONS[slug]


def run_checked(command: list[str], what: str, echo: bool = False, env: Mapping[str, str] | None = None) -> str:
    """Run a command; on failure raise one line naming the step and the command's last output line."""
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if echo and result.stdout.strip():
        print(result.stdout.strip())
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise PackagingError(f"{what} failed (exit {result.returncode}): {lines[-1]}")
    return result.stdout
