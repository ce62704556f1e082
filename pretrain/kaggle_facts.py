"""What Kaggle gives the competition's notebook, in one place: the machine, the clock, the hidden
tasks, where the data mounts, what the image runs.

A change on Kaggle's side is an edit here. The module imports only the standard library, so every
layer imports it downwards: ``pretrain.hardware`` projects runtimes onto the machine,
``make_submission`` takes its clock, ``submission.kaggle_env`` finds the files, and
``submission.kaggle`` builds, rehearses and pushes the notebook. What the project chose for itself
(its environment variables, dataset slugs, log markers) stays with the code that chose it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# ------------------------------------------------------------------------------------------ machine

KAGGLE_GPUS = 4  # NVIDIA L4s (24 GB each, bf16); every kaggle-* preset but kaggle-placeholder is sized for them
# machine_shape of the 4x L4 machine. Source: Kaggle's own CLI docs (github.com/Kaggle/kaggle-cli,
# docs/kernels.md "Accelerators available", and docs/kernels_metadata.md) list "NvidiaL4" and
# "NvidiaL4X1" and no "NvidiaL4X4". X1 is the single card, so the bare name is the multi-card machine,
# as the bare "NvidiaTeslaT4" is "GPU T4 x2". The notebook prints the GPUs it got, so a run shows it.
MACHINE_SHAPE = "NvidiaL4"

# ------------------------------------------------------------------------------------------ the run

KAGGLE_TASKS = 240  # hidden tasks at the scored rerun (the visible test file is a placeholder of as many)
KAGGLE_WALL_SECONDS = 12 * 3600  # the whole notebook's wall clock, installs included
# What make_submission leaves of it: installs, loading the network and a safety margin (Kaggle reports
# runtimes with up to +-10 minutes of noise) come out of the 12 hours.
NOTEBOOK_MARGIN_SECONDS = 45 * 60
KAGGLE_TIME_LIMIT = KAGGLE_WALL_SECONDS - NOTEBOOK_MARGIN_SECONDS  # make_submission's default on Kaggle

# ------------------------------------------------------------------------------------ files and flags

INPUT_ROOT = "/kaggle/input"  # read-only: competition data and attached datasets, one folder each
WORKING_ROOT = "/kaggle/working"  # writable; Kaggle scores the submission file found here
TEST_CHALLENGES = "arc-agi_test_challenges.json"
SUBMISSION_FILE = "submission.json"
RUN_TYPE_ENV = "KAGGLE_KERNEL_RUN_TYPE"  # set by Kaggle in every notebook session ("Interactive", "Batch")
RERUN_ENV = "KAGGLE_IS_COMPETITION_RERUN"  # set by Kaggle only while it reruns the notebook on the hidden set

# ------------------------------------------------------------------------------------- competitions


@dataclass(frozen=True)
class Competition:
    slug: str
    mount: str  # where Kaggle mounts its data, under the input root (COMPETITION_GLOBS finds both kinds)


# The competitions the project knows. Both run on the 4x L4 machine for 12 hours with 240 hidden tasks.
COMPETITIONS: Mapping[str, Competition] = {
    "arc-prize-2025": Competition("arc-prize-2025", "arc-prize-2025"),
    "arc-prize-2026-arc-agi-2": Competition("arc-prize-2026-arc-agi-2", "competitions/arc-prize-2026-arc-agi-2"),
}
DEFAULT_COMPETITION = "arc-prize-2026-arc-agi-2"

# Where a competition's data mounts under the input root: <input>/competitions/<slug>/ (ARC Prize 2026)
# first, then <input>/<slug>/ (2025 and earlier). That order matters: an attached dataset also mounts
# at <input>/<slug>/, and one that carries a copy of the test file (a public notebook's inputs, say)
# must never win over the competition's own folder. The notebook's first cell, which runs before the
# project is installed, is given this same tuple.
COMPETITION_GLOBS = ("competitions/*/" + TEST_CHALLENGES, "*/" + TEST_CHALLENGES)

# ---------------------------------------------------------------------------------------- the image

KAGGLE_PYTHONS = ("3.11", "3.12", "3.13")  # what Kaggle's image has run (3.12 since December 2025) and may run next
KAGGLE_PLATFORM = "manylinux2014_x86_64"  # pip also accepts the older manylinux tags below it
# The versions in Kaggle's image (built on Colab's runtime; Colab's published GPU pip freeze of
# 2026, Python 3.12, torch 2.11+cu128). The rehearsal installs these where it can.
KAGGLE_IMAGE_VERSIONS = {"numpy": "2.0.2", "numba": "0.60.0", "llvmlite": "0.43.0", "safetensors": "0.7.0",
                         "orjson": "3.11.9", "einops": "0.8.2"}
