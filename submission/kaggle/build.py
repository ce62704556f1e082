"""Build the four folders of a Kaggle submission (see ``layout``) and print how to upload them."""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import orjson

from pretrain.import_official import OfficialImportError, import_checkpoint, is_official_checkpoint
from pretrain.kaggle_facts import DEFAULT_COMPETITION, KAGGLE_PLATFORM, KAGGLE_PYTHONS, SUBMISSION_FILE
from submission.config import FINETUNE_PRESETS
from submission.kaggle import notebook, wheelhouse
from submission.kaggle.layout import (BUILD_FILE, CODE_SLUG, DATASET_METADATA, DEFAULT_PRESET, KERNEL_SLUG,
                                      USER_PLACEHOLDER, WEIGHT_FILES, WEIGHTS_SLUG, WHEELS_SLUG, Layout, PackagingError,
                                      check_competition, expected_gpus, run_checked)


@dataclass(frozen=True)
class BuildConfig:
    out_dir: Path
    checkpoint: Path  # an exported network folder (python -m pretrain.export), or an official TRM/HRM checkpoint file
    source: Path  # the project root, holding pyproject.toml
    user: str  # Kaggle username owning the datasets and the notebook
    competition: str = DEFAULT_COMPETITION  # a slug of kaggle_facts.COMPETITIONS
    # The make_submission preset the notebook runs, on the pushed run and on the scored rerun alike.
    preset: str = DEFAULT_PRESET
    wheels: bool = True  # download the wheelhouse (off for fast tests)
    pythons: tuple[str, ...] = KAGGLE_PYTHONS  # a wheel of each binary package for each
    platform: str = KAGGLE_PLATFORM
    find_links: Path | None = None  # a local folder of wheels instead of the package index
    # An official checkpoint's config: a named recipe, or its all_config.yaml (default: the one beside
    # it), then KEY=VALUE changes (see pretrain.import_official).
    recipe: str | None = None
    official_config: Path | None = None
    sets: tuple[str, ...] = ()

    def dataset_id(self, slug: str) -> str:
        return f"{self.user}/{slug}"


def build(config: BuildConfig) -> Layout:
    check_competition(config.competition)
    check_preset(config.preset)
    check_checkpoint(config.checkpoint)
    layout = Layout(config.out_dir)
    for folder in (layout.code, layout.weights, layout.wheels, layout.notebook):
        if folder.exists():
            shutil.rmtree(folder)  # a stale file from an earlier build must not ship
        folder.mkdir(parents=True)
    write_code(layout.code, config)
    write_build_file(layout.code, config)
    weights_from_checkpoint(layout.weights, config)
    write_wheels(layout.wheels, config)
    notebook.write_notebook(layout.notebook, config.user, config.competition)
    return layout


def check_preset(preset: str) -> None:
    if preset not in FINETUNE_PRESETS:
        raise PackagingError(f"unknown preset {preset!r}; known: {', '.join(sorted(FINETUNE_PRESETS))}")


def write_build_file(code: Path, config: BuildConfig) -> None:
    """What this build runs, for the notebook (which passes the preset to make_submission) and for
    push (which checks the run against it). The id tells one build's run from another's in a log."""
    info = {"preset": config.preset, "gpus": expected_gpus(config.preset), "competition": config.competition,
            "build": f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"}
    (code / BUILD_FILE).write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))


def check_checkpoint(checkpoint: Path) -> None:
    if checkpoint.is_file() and is_official_checkpoint(checkpoint):
        return
    if not checkpoint.is_dir():
        raise PackagingError(f"{checkpoint}: neither an exported network folder (python -m pretrain.export) nor "
                             "a checkpoint file of the official TRM/HRM code")
    for name in WEIGHT_FILES:
        if not (checkpoint / name).is_file():
            raise PackagingError(f"{checkpoint}: no {name}; is this an exported network (python -m pretrain.export)?")


def project_entries(source: Path) -> list[str]:
    """The files and folders of the project that ship: the top-level packages and modules pyproject
    installs, plus its metadata."""
    pyproject = source / "pyproject.toml"
    if not pyproject.is_file():
        raise PackagingError(f"{source}: no pyproject.toml; pass --source with the project's root folder")
    tool = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    packages = list(dict.fromkeys(package.split(".")[0] for package in tool["packages"]))  # subpackages ship inside
    return packages + [f"{module}.py" for module in tool["py-modules"]] + ["pyproject.toml", "requirements.txt",
                                                                          "README.md"]


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


def weights_from_checkpoint(folder: Path, config: BuildConfig) -> None:
    """The one place where the checkpoint becomes the weights folder: an exported network's files are
    copied as they are; an official checkpoint file is imported into the same two files (the network
    and the puzzle table's mean row, a few tens of MB instead of the file's gigabytes)."""
    if config.checkpoint.is_file():
        try:
            import_checkpoint(config.checkpoint, folder, config=config.official_config, recipe=config.recipe,
                              sets=config.sets)
        except OfficialImportError as error:
            raise PackagingError(f"{config.checkpoint}: {error}") from None
    else:
        if config.recipe or config.official_config or config.sets:
            raise PackagingError("--recipe, --config and --set apply only to a checkpoint file of the official "
                                 "TRM/HRM code")
        for name in WEIGHT_FILES:
            shutil.copy2(config.checkpoint / name, folder / name)
    write_dataset_metadata(folder, config.dataset_id(WEIGHTS_SLUG), "ARC TRM weights")


def write_wheels(folder: Path, config: BuildConfig) -> None:
    wheelhouse.build_wheelhouse(folder, config.pythons, config.platform, config.wheels, config.find_links)
    write_dataset_metadata(folder, config.dataset_id(WHEELS_SLUG), "ARC TRM wheels")


def write_dataset_metadata(folder: Path, dataset_id: str, title: str) -> None:
    metadata = {"title": title, "id": dataset_id, "licenses": [{"name": "apache-2.0"}]}
    (folder / DATASET_METADATA).write_bytes(orjson.dumps(metadata, option=orjson.OPT_INDENT_2))


def upload_commands(layout: Layout) -> list[list[str]]:
    """First-time commands: create the three datasets, then push (and run) the notebook."""
    commands = [["kaggle", "datasets", "create", "-p", str(folder), "-r", "zip"]
                for folder in layout.datasets().values()]
    return commands + [["kaggle", "kernels", "push", "-p", str(layout.notebook)]]


def print_instructions(layout: Layout, config: BuildConfig) -> None:
    kernel = config.dataset_id(KERNEL_SLUG)
    print(f"built {layout.root} for {config.competition}: code/, weights/, wheels/ (Python "
          f"{', '.join(config.pythons)}), notebook/")
    gpus = expected_gpus(config.preset)
    print(f"the notebook runs preset {config.preset} on the pushed run and on the scored rerun alike"
          + (f" (sized for {gpus} GPUs)" if gpus else ""))
    if not gpus:
        print(f"note: {config.preset} is not a preset for Kaggle's 4x L4 machine; a submission of this build "
              "would run it on the hidden tasks too")
    if config.user == USER_PLACEHOLDER:
        print(f"note: ids use the placeholder {USER_PLACEHOLDER}; rebuild with --user NAME (or KAGGLE_USERNAME)")
    if not config.wheels:
        print("note: --no-wheels: wheels/ holds no wheels; the notebook's install will fail on Kaggle")
    print("\nfirst upload (-r zip keeps the package folders); wait until each dataset is ready:")
    for command in upload_commands(layout):
        print("  " + " ".join(command))
    print("\nlater uploads: a new version of each dataset, then push the notebook again:")
    for folder in layout.datasets().values():
        print(f"  kaggle datasets version -p {folder} -r zip -m 'new version'")
    print(f"  kaggle kernels push -p {layout.notebook}")
    print(f"\nor all of it, checked, with: python -m submission.kaggle push {layout.root} --user {config.user} "
          f"--competition {config.competition}")
    print(f"\nwhen the pushed version has run (kaggle kernels status {kernel}), submit it (one a day):")
    print(f"  kaggle competitions submit {config.competition} -k {kernel} -v VERSION -f {SUBMISSION_FILE} -m 'message'")
