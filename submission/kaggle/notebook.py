"""The notebook Kaggle runs, and its ``kernel-metadata.json``.

Four code cells, each of which reports a failure (``FAILED_MARK``) instead of raising, because an
exception ends a Kaggle notebook and makes the whole entry a scoring error:

1. with the standard library alone, before any install or import: keep numba's cache out of the
   output folder, print the GPUs ("GPUs: N", which push checks), find the challenges file and write a
   valid fallback ``submission.json`` for every task and test input;
2. the offline install of the wheelhouse (pip picks the wheels of the running Python) and the
   project's wheel;
3. ``python -m make_submission --preset NAME`` with the build's preset (``BUILD_FILE``), the same on
   the pushed run and on the scored rerun; it replaces the file only with better valid ones;
4. a last check with the standard library: a file that is not valid is replaced by the fallback.

The cells run before the project is installed, so they cannot import it: the shared names are
formatted in from ``kaggle_env`` and ``layout``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from submission import kaggle_env
from submission.kaggle.layout import (BUILD_FILE, CODE_SLUG, CODE_WHEEL_GLOB, FAILED_MARK, KERNEL_METADATA,
                                      KERNEL_SLUG, MACHINE_SHAPE, NOTEBOOK_FILE, NOTEBOOK_SECONDS_ENV, VALID_MARK,
                                      WEIGHT_FILES, WEIGHTS_SLUG, WHEELHOUSE_MARKER, WHEELS_SLUG)
from submission.kaggle.wheelhouse import wheel_names

# Seconds of a rehearsal's --time-limit kept back from make_submission: its own start (imports,
# loading the network) and the last cell. Plus this share of the budget, for a loaded machine.
FINISH_RESERVE_SECONDS = 15.0
FINISH_RESERVE_SHARE = 0.05


def kernel_metadata(user: str, competition: str) -> dict:
    # Every switch explicit: Kaggle's defaults are internet on and no GPU. No docker_image: the CLI
    # passes one through, but Kaggle publishes no list of valid values; "original" pinning keeps the
    # image of the notebook's first version for later versions instead of moving to the newest.
    return {
        "id": f"{user}/{KERNEL_SLUG}",
        "title": "ARC TRM submission",  # Kaggle derives the slug from the title: keep them matching
        "code_file": NOTEBOOK_FILE,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": False,
        "machine_shape": MACHINE_SHAPE,
        "docker_image_pinning_type": "original",
        "competition_sources": [competition],
        "dataset_sources": [f"{user}/{slug}" for slug in (CODE_SLUG, WEIGHTS_SLUG, WHEELS_SLUG)],
        "kernel_sources": [],
        "model_sources": [],
    }


def fallback_cell() -> str:
    return f'''\
# 1. A valid submission.json first, with the standard library alone: anything later may fail (a
#    dataset that is not attached, a wheel that does not install, a broken checkpoint), and a missing
#    file is a scoring error for the whole entry. Later cells only replace it with a better valid one.
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

NOTEBOOK_STARTED = time.monotonic()
# numba caches compiled kernels beside their source, or in NUMBA_CACHE_DIR. Kaggle keeps everything
# under /kaggle/working as the notebook's output, so the cache goes to a temporary folder, set before
# any process imports numba: the output folder holds the submission alone.
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cache-")
INPUT = Path(os.environ.get("{kaggle_env.INPUT_ENV}") or "{kaggle_env.DEFAULT_INPUT}")
WORKING = Path(os.environ.get("{kaggle_env.WORKING_ENV}") or "{kaggle_env.DEFAULT_WORKING}")
SUBMISSION = WORKING / "{kaggle_env.SUBMISSION_FILE}"
CHALLENGES, FALLBACK = {{}}, None


def report_failure(step, error):
    """A failed step is printed, never raised: the notebook must end normally for the file to score."""
    print(f"{FAILED_MARK}: {{step}}: {{type(error).__name__}}: {{error}}", flush=True)


def report_gpus():
    """One line "GPUs: N" (push refuses a run with fewer than the preset expects), then one per GPU."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=60)
        found = [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        found = []  # no nvidia-smi, or it failed: no GPU this notebook can use
    print(f"GPUs: {{len(found)}}" + "".join(f"\\n  GPU {{i}}: {{line}}" for i, line in enumerate(found)), flush=True)


def find_test_challenges():
    """The competition's own folder first (as submission.kaggle_env does), then the shallowest copy."""
    for pattern in {kaggle_env.COMPETITION_GLOBS!r}:
        found = sorted(INPUT.glob(pattern))
        if found:
            return found[0]
    deeper = sorted(INPUT.rglob("{kaggle_env.TEST_CHALLENGES}"), key=lambda path: (len(path.parts), str(path)))
    if not deeper:
        raise FileNotFoundError(f"no {kaggle_env.TEST_CHALLENGES} under {{INPUT}}: is the competition attached?")
    return deeper[0]


def is_grid(value):
    return (isinstance(value, list) and 1 <= len(value) <= 30 and all(isinstance(row, list) for row in value)
            and 1 <= len(value[0]) <= 30 and all(len(row) == len(value[0]) for row in value)
            and all(type(cell) is int and 0 <= cell <= 9 for row in value for cell in row))


def is_valid_submission(submission, challenges):
    """Every task of the challenges and no other, one entry per test input, two valid grids in each."""
    return (isinstance(submission, dict) and set(submission) == set(challenges)
            and all(isinstance(entries, list) and len(entries) == len(challenges[task_id]["test"])
                    and all(isinstance(entry, dict) and is_grid(entry.get("attempt_1"))
                            and is_grid(entry.get("attempt_2")) for entry in entries)
                    for task_id, entries in submission.items()))


def fallback_submission(challenges):
    """attempt_1: the test input itself (some tasks barely change it), attempt_2: [[0]]."""
    return {{task_id: [{{"attempt_1": test["input"] if is_grid(test.get("input")) else [[0]], "attempt_2": [[0]]}}
                      for test in task["test"]] for task_id, task in challenges.items()}}


def write_atomically(path, data):
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{{path.name}}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


print(f"Python {{sys.version.split()[0]}}", flush=True)
report_gpus()
try:
    CHALLENGES = json.loads(find_test_challenges().read_bytes())
    FALLBACK = json.dumps(fallback_submission(CHALLENGES)).encode()
    WORKING.mkdir(parents=True, exist_ok=True)
    write_atomically(SUBMISSION, FALLBACK)
    print(f"wrote the fallback {{SUBMISSION}}: {{len(CHALLENGES)}} tasks", flush=True)
except Exception as error:
    report_failure("fallback submission", error)
'''


def install_cell() -> str:
    return f'''\
# 2. Offline install: Kaggle runs this notebook without internet, so the wheels and the project come
#    from the attached datasets. The wheelhouse holds wheels for several Pythons; pip takes the ones
#    this interpreter runs. --no-deps keeps Kaggle's own CUDA torch.
import importlib

WHEEL_PACKAGES = {wheel_names()!r}
INSTALLED = False


def find_one(pattern):
    """The shallowest file under INPUT matching pattern (Kaggle's mount paths vary)."""
    found = sorted(INPUT.rglob(pattern), key=lambda path: (len(path.parts), str(path)))
    if not found:
        raise FileNotFoundError(f"no {{pattern}} under {{INPUT}}: is its dataset attached to this notebook?")
    return found[0]


def install():
    marker = find_one("{WHEELHOUSE_MARKER}")
    built_for = json.loads(marker.read_bytes())["python_versions"]
    running = f"{{sys.version_info.major}}.{{sys.version_info.minor}}"
    if running not in built_for:
        print(f"warning: the wheelhouse was built for Python {{', '.join(built_for)}}, this is {{running}}")
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet"]
    subprocess.run(pip + ["--find-links", str(marker.parent), *WHEEL_PACKAGES], check=True)
    code_wheel = find_one("{CODE_WHEEL_GLOB}")
    subprocess.run(pip + [str(code_wheel)], check=True)
    importlib.invalidate_caches()
    print(f"installed {{code_wheel.name}} and {{', '.join(WHEEL_PACKAGES)}} for Python {{running}}", flush=True)


try:
    install()
    INSTALLED = True
except Exception as error:
    report_failure("offline install", error)
'''


def run_cell() -> str:
    return f'''\
# 3. The whole pipeline in one call: it fine-tunes and predicts every task, rewriting the file only
#    with complete, valid versions. A failure keeps the file as it was. The preset is the build's, the
#    same on this run and on the scored rerun, so no setting runs for the first time when it counts.
def run_make_submission():
    build = json.loads(find_one("{BUILD_FILE}").read_bytes())
    print(f"build {{build['build']}}: preset {{build['preset']}}", flush=True)
    weights = find_one("{WEIGHT_FILES[0]}").parent
    command = [sys.executable, "-m", "make_submission", "--checkpoint", str(weights),
               "--challenges", str(find_test_challenges()), "--out", str(SUBMISSION), "--preset", build["preset"]]
    budget = os.environ.get("{NOTEBOOK_SECONDS_ENV}")  # set only by the local rehearsal
    if budget:
        left = float(budget) - (time.monotonic() - NOTEBOOK_STARTED)
        reserve = {FINISH_RESERVE_SECONDS} + {FINISH_RESERVE_SHARE} * float(budget)
        command += ["--time-limit", f"{{max(1.0, left - reserve):.0f}}"]
    env = {{**os.environ, "TQDM_MININTERVAL": "30"}}  # NUMBA_CACHE_DIR comes from the first cell
    status = subprocess.run(command, cwd=WORKING, env=env).returncode
    if status != 0:
        raise RuntimeError(f"make_submission exited with status {{status}}; the file keeps its last valid version")


if INSTALLED and FALLBACK is not None:
    try:
        run_make_submission()
    except Exception as error:
        report_failure("make_submission", error)
else:
    print("make_submission skipped (see the failure above); the fallback file stays", flush=True)
'''


def check_cell() -> str:
    return f'''\
# 4. Never end without a complete, valid submission file: keep the model's file when it is valid,
#    else put the fallback back.
try:
    valid = is_valid_submission(json.loads(SUBMISSION.read_bytes()), CHALLENGES) and bool(CHALLENGES)
except (OSError, ValueError) as error:
    report_failure("final check", error)
    valid = False
if valid:
    print(f"{VALID_MARK}: {{SUBMISSION}} is valid for all {{len(CHALLENGES)}} tasks", flush=True)
elif FALLBACK is not None:
    write_atomically(SUBMISSION, FALLBACK)
    report_failure("final check", ValueError(f"{{SUBMISSION}} was not valid; the fallback is back in its place"))
else:
    report_failure("final check", FileNotFoundError("no challenges file was read, so no submission exists"))
'''


def notebook_cells() -> list[str]:
    return [fallback_cell(), install_cell(), run_cell(), check_cell()]


def notebook_json(cells: Sequence[str]) -> dict:
    """An nbformat 4 notebook of code cells, written by hand (no nbformat dependency)."""
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": source.splitlines(keepends=True)} for source in cells],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "kaggle": {"isInternetEnabled": False, "isGpuEnabled": True, "language": "python",
                       "sourceType": "notebook"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebook(folder: Path, user: str, competition: str) -> None:
    (folder / KERNEL_METADATA).write_bytes(orjson.dumps(kernel_metadata(user, competition),
                                                               option=orjson.OPT_INDENT_2))
    (folder / NOTEBOOK_FILE).write_bytes(orjson.dumps(notebook_json(notebook_cells()), option=orjson.OPT_INDENT_2))


def code_cell_sources(notebook_path: Path) -> list[str]:
    notebook = orjson.loads(notebook_path.read_bytes())
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
