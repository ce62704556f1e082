"""The notebook Kaggle runs, and its ``kernel-metadata.json``.

Four code cells, each of which reports a failure (``FAILED_MARK``) instead of raising, because an
exception ends a Kaggle notebook and makes the whole entry a scoring error:

1. ``fallback_cell.py``, with the standard library alone, before any install or import: keep numba's
   cache out of the output folder, print the GPUs ("GPUs: N", which push checks), find the challenges
   file and write a valid fallback ``submission.json`` for every task and test input;
2. the offline install of the wheelhouse (pip picks the wheels of the running Python) and the
   project's wheel;
3. ``python -m make_submission --preset NAME`` with the build's preset (``BUILD_FILE``), the same on
   the pushed run and on the scored rerun; it replaces the file only with better valid ones;
4. a last check with the standard library: a file that is not valid is replaced by the fallback.

The cells run before the project is installed, so they cannot import it: the shared names are
formatted in from ``pretrain.kaggle_facts``, ``kaggle_env`` and ``layout`` (into the first cell's
``SETTINGS``, and into the others' source).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path

import orjson

from pretrain import kaggle_facts
from submission import kaggle_env
from submission.kaggle.layout import (BUILD_FILE, CODE_SLUG, CODE_WHEEL_GLOB, FAILED_MARK, KERNEL_METADATA,
                                      KERNEL_SLUG, NOTEBOOK_FILE, NOTEBOOK_SECONDS_ENV, VALID_MARK,
                                      WEIGHT_FILES, WEIGHTS_SLUG, WHEELHOUSE_MARKER, WHEELS_SLUG)
from submission.kaggle.wheelhouse import wheel_names

# The first cell's program, a file of its own so that it can be read, run and tested as it is.
FALLBACK_CELL_FILE = Path(__file__).with_name("fallback_cell.py")

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
        "machine_shape": kaggle_facts.MACHINE_SHAPE,
        "docker_image_pinning_type": "original",
        "competition_sources": [competition],
        "dataset_sources": [f"{user}/{slug}" for slug in (CODE_SLUG, WEIGHTS_SLUG, WHEELS_SLUG)],
        "kernel_sources": [],
        "model_sources": [],
    }


def fallback_settings() -> dict[str, str | list[str]]:
    """The first cell's SETTINGS: the project's names, which the cell cannot import."""
    return {
        "input_env": kaggle_env.INPUT_ENV,
        "default_input": kaggle_facts.INPUT_ROOT,
        "working_env": kaggle_env.WORKING_ENV,
        "default_working": kaggle_facts.WORKING_ROOT,
        "submission_file": kaggle_facts.SUBMISSION_FILE,
        "test_challenges": kaggle_facts.TEST_CHALLENGES,
        "competition_globs": list(kaggle_facts.COMPETITION_GLOBS),
        "failed_mark": FAILED_MARK,
    }


def settings_source(settings: dict[str, str | list[str]]) -> str:
    """``SETTINGS = {...}`` as Python, one key a line. Strings and lists of strings only: their JSON is
    a Python literal too, with every character escaped, so no value can become code."""
    for key, value in settings.items():
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise TypeError(f"SETTINGS[{key!r}] must be a string or a list of strings, not {value!r}")
    lines = [f"    {json.dumps(key)}: {json.dumps(value)},\n" for key, value in settings.items()]
    return "SETTINGS = {\n" + "".join(lines) + "}\n"


def settings_span(source: str) -> tuple[int, int]:
    """The lines (0-based, end excluded) of the one top-level ``SETTINGS = ...`` of a cell's source."""
    found = [node for node in ast.parse(source).body
             if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SETTINGS"]]
    if len(found) != 1:
        raise ValueError(f"{FALLBACK_CELL_FILE.name}: {len(found)} top-level SETTINGS assignments, not one")
    return found[0].lineno - 1, found[0].end_lineno


def fallback_cell() -> str:
    """fallback_cell.py as it is, but for its SETTINGS, written from the project's constants."""
    source = FALLBACK_CELL_FILE.read_text()
    start, end = settings_span(source)
    lines = source.splitlines(keepends=True)
    return "".join(lines[:start]) + settings_source(fallback_settings()) + "".join(lines[end:])


def install_cell() -> str:
    return f'''\
# 2. Offline install: Kaggle runs this notebook without internet, so the wheels and the project come
#    from the attached datasets. The wheelhouse holds wheels for several Pythons; pip takes the ones
#    this interpreter runs. --no-deps keeps Kaggle's own CUDA torch.
import importlib

WHEEL_PACKAGES = {wheel_names()!r}
INSTALLED = False


def find_one(pattern, outside=None):
    """The shallowest file under INPUT matching pattern (Kaggle's mount paths vary), leaving out what
    lies under the folder ``outside``."""
    found = sorted((path for path in INPUT.rglob(pattern) if outside is None or outside not in path.parents),
                   key=lambda path: (len(path.parts), str(path)))
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
    build_file = find_one("{BUILD_FILE}")
    build = json.loads(build_file.read_bytes())
    print(f"build {{build['build']}}: preset {{build['preset']}}", flush=True)
    # The weights dataset's network, never the small one shipped inside the code dataset.
    weights = find_one("{WEIGHT_FILES[0]}", outside=build_file.parent).parent
    command = [sys.executable, "-m", "make_submission", "--checkpoint", str(weights),
               "--challenges", str(find_test_challenges(INPUT)), "--out", str(SUBMISSION), "--preset", build["preset"]]
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
