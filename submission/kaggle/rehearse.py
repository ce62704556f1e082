"""Run a build's notebook locally the way Kaggle runs it, so a broken package costs no daily submission.

The rehearsal mounts the build under a temporary folder as Kaggle does (the competition's test file
and one read-only folder per dataset, a writable working folder), makes a fresh virtual environment
that holds what Kaggle's image has (its versions of numpy, numba, llvmlite, safetensors, orjson and
einops where the package index has them; this machine's torch), runs the notebook's cells in order
with no network, kills it at ``--time-limit`` as Kaggle would at 12 hours, and checks the file:
valid for every task, and predicted (not the fallback) for most of them. The notebook runs the
build's preset, as on Kaggle's pushed run and scored rerun.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from arc_data import load_kaggle
from arc_data.tasks import Task
from pretrain.kaggle_facts import (DEFAULT_COMPETITION, KAGGLE_IMAGE_VERSIONS, RERUN_ENV, RUN_TYPE_ENV,
                                   TEST_CHALLENGES)
from submission import kaggle_env
from submission.kaggle import wheelhouse
from submission.kaggle.layout import (CODE_WHEEL_GLOB, DATASET_METADATA, FAILED_MARK,
                                      KERNEL_METADATA, NOTEBOOK_FILE, NOTEBOOK_SECONDS_ENV, WEIGHT_FILES,
                                      WHEELHOUSE_MARKER, CheckFailed, Layout, PackagingError, check_competition,
                                      gpus_in_log, read_build_file, run_checked)
from submission.kaggle.notebook import code_cell_sources
from submission.kaggle_env import KagglePaths
from submission.scoring import format_score, score_submission
from submission.writer import SubmissionError, prefill, read_submission, validate_submission

# Also in Kaggle's image, borrowed from this machine with their dependencies (torch: its CPU build).
BORROWED = ("torch", "scipy", "tqdm", "matplotlib")
# An address where nothing listens: any HTTP(S) request of pip or of the code fails at once.
UNROUTABLE_PROXY = "http://127.0.0.1:9"
NOBODY = "nobody"


@dataclass(frozen=True)
class RehearsalConfig:
    build_dir: Path  # a finished build (all four folders)
    challenges: Path  # becomes the competition's arc-agi_test_challenges.json
    solutions: Path | None = None  # to score the result as well
    keep: bool = False  # keep the Kaggle folders for a look afterwards
    workdir: Path | None = None  # where the Kaggle folders go (default: a new temporary folder)
    time_limit: float | None = None  # the notebook's whole budget in seconds (Kaggle's 12 h); killed at it
    rerun: bool = False  # pretend to be Kaggle's rerun on the hidden set (KAGGLE_IS_COMPETITION_RERUN)
    competition: str = DEFAULT_COMPETITION
    detach: tuple[str, ...] = ()  # dataset slugs left unattached, to see the notebook survive it
    min_predicted: float = 0.5  # the share of tasks that must be predicted, not left with the fallback


@dataclass
class Isolation:
    """How the notebook process is kept offline and away from writing into the input folders."""
    prefix: list[str] = field(default_factory=list)  # a command that wraps the notebook's (unshare ...)
    user: tuple[int, int] | None = None  # (uid, gid) to drop to, when root
    notes: list[str] = field(default_factory=list)  # what is and is not enforced, for the output


def rehearse(config: RehearsalConfig) -> None:
    layout = Layout(config.build_dir)
    build = check_build(layout)
    competition = check_competition(config.competition)
    if config.time_limit is not None and not config.time_limit > 0:
        raise PackagingError(f"--time-limit must be a positive number of seconds, got {config.time_limit:g}")
    tasks = load_kaggle(config.challenges, config.solutions)  # bad input fails here, in one line
    started = time.monotonic()
    root = new_workdir(config.workdir)
    try:
        paths = stage_kaggle_folders(layout, config, competition.mount, root)
        python = make_kaggle_like_venv(root / "venv")
        isolation = isolate(python, paths)
        for note in isolation.notes:
            print(f"rehearsal: {note}")
        print(f"rehearsal: preset {build['preset']}, the one the pushed run and the scored rerun run")
        output, killed = run_notebook(python, layout.notebook / NOTEBOOK_FILE, paths, config, isolation)
        print(gpu_note(output, build))
        check_result(paths, tasks, config, output, killed, time.monotonic() - started)
        # After the run, which may pass without a wheel the rehearsal's environment happens to have.
        check_wheelhouse(python, layout.wheels, root / "wheel-check")
        print(f"rehearsal passed: {paths.submission} is valid for all {len(tasks)} tasks")
        if config.solutions is not None:
            print(format_score(score_submission(read_submission(paths.submission), tasks)))
    finally:
        if config.keep:
            print(f"kept the rehearsal's folders in {root}")
        else:
            make_writable(root)
            shutil.rmtree(root)


def new_workdir(workdir: Path | None) -> Path:
    if workdir is None:
        root = Path(tempfile.mkdtemp(prefix="arc-kaggle-rehearsal-"))
        root.chmod(0o755)  # an unprivileged notebook user must reach the folders inside
        return root
    if workdir.exists():
        raise PackagingError(f"{workdir}: already exists; give a new folder (never mixed with an earlier rehearsal)")
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    return workdir


def check_build(layout: Layout) -> dict:
    """The build's choices (its BUILD_FILE), once the build is complete and fits this Python."""
    needed = [layout.code / "pyproject.toml", layout.notebook / NOTEBOOK_FILE, layout.notebook / KERNEL_METADATA,
              layout.wheels / WHEELHOUSE_MARKER] + [layout.weights / name for name in WEIGHT_FILES]
    missing = [path for path in needed if not path.is_file()]
    if missing:
        raise PackagingError(f"{layout.root}: not a complete build (no {missing[0]}); run build or pass --checkpoint")
    if not list(layout.code.glob(CODE_WHEEL_GLOB)):
        raise PackagingError(f"{layout.code}: no project wheel ({CODE_WHEEL_GLOB}); run build again")
    built_for = wheelhouse.read_marker(layout.wheels).get("python_versions", [])
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here not in built_for:
        raise PackagingError(f"the wheelhouse is for Python {', '.join(built_for)}; this is {here}: rehearse with "
                             "one of those or build with --python " + here)
    return read_build_file(layout)


def gpu_note(output: list[str], build: dict) -> str:
    """How many GPUs the notebook saw against the preset's; a note, not a failure: a rehearsal runs
    anywhere, while push refuses a Kaggle run with fewer."""
    seen = gpus_in_log("".join(output))
    seen_text = "no 'GPUs: N' line" if seen is None else f"{seen} GPU(s)"
    if build["gpus"] and (seen is None or seen < build["gpus"]):
        return (f"rehearsal: the notebook saw {seen_text}; preset {build['preset']} expects {build['gpus']} on Kaggle, "
                "where push refuses a run with fewer")
    return f"rehearsal: the notebook saw {seen_text}"


def stage_kaggle_folders(layout: Layout, config: RehearsalConfig, mount: str, root: Path) -> KagglePaths:
    """Kaggle's mounts: the competition's folder and one folder per dataset, read-only, and a writable
    working folder."""
    paths = KagglePaths(input_root=root / "input", working_root=root / "working")
    competition = paths.input_root / mount
    competition.mkdir(parents=True)
    shutil.copy2(config.challenges, competition / TEST_CHALLENGES)
    for slug, folder in layout.datasets().items():
        if slug not in config.detach:
            shutil.copytree(folder, paths.input_root / slug, ignore=shutil.ignore_patterns(DATASET_METADATA))
    make_read_only(paths.input_root)
    paths.working_root.mkdir()
    return paths


# ----------------------------------------------------------------------------- the image's environment

def make_kaggle_like_venv(venv: Path) -> Path:
    """A virtual environment holding what Kaggle's image has and nothing else: anything more the
    notebook needs must come from the wheelhouse, as on Kaggle."""
    run_checked([sys.executable, "-m", "venv", str(venv)], "creating the rehearsal's virtual environment")
    python = venv / "bin" / "python"
    installed = install_image_versions(python)
    site = Path(run_checked([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                            "locating the venv's site-packages").strip())
    borrowed = [name for name in KAGGLE_IMAGE_VERSIONS if name not in installed] + list(BORROWED)
    for distribution in distribution_closure(borrowed, exclude=installed):
        link_distribution(distribution, site)
    return python


def image_wheel_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "arc-trm" / "kaggle-image" / f"py{sys.version_info.major}{sys.version_info.minor}"


def install_image_versions(python: Path) -> set[str]:
    """Install Kaggle's versions of KAGGLE_IMAGE_VERSIONS from the package index (cached); the names
    installed. A version the index has no wheel of for this Python is reported and left out."""
    cache = image_wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    available = []
    for name, version in KAGGLE_IMAGE_VERSIONS.items():
        requirement = f"{name}=={version}"
        if not cached_wheel(cache, name, version):
            result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                     "--dest", str(cache), "--quiet", requirement], capture_output=True, text=True)
            if result.returncode != 0:
                print(f"rehearsal: no wheel of {requirement} (Kaggle's) for this Python from the package index; "
                      f"using this machine's {name} {installed_version(name)}")
                continue
        available.append(requirement)
    if available:
        run_checked([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--find-links",
                     str(cache), *available], "installing Kaggle's versions into the rehearsal's environment",
                    env=offline_pip_env(os.environ))
        print(f"rehearsal: Kaggle's image versions: {', '.join(available)}")
    return {canonical_name(requirement.split("==")[0]) for requirement in available}


def cached_wheel(cache: Path, name: str, version: str) -> bool:
    prefix = f"{name.replace('-', '_')}-{version}-"
    return any(path.name.lower().startswith(prefix.lower()) for path in cache.glob("*.whl"))


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def distribution_closure(names: Iterable[str], exclude: Iterable[str] = ()) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need, their own requirements followed transitively,
    except those in ``exclude`` (installed in Kaggle's version instead)."""
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise PackagingError(f"this machine lacks {name}, which the rehearsal borrows as Kaggle's image "
                                 "has it") from None
    found: dict[str, importlib.metadata.Distribution] = {}
    skipped = {canonical_name(name) for name in exclude}
    pending = list(names)
    while pending:
        name = canonical_name(pending.pop())
        if name in found or name in skipped:
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
               "--find-links", str(wheels), *wheelhouse.wheel_names()]
    run_checked(command, "installing every wheelhouse package offline", env=offline_pip_env(os.environ))


def offline_pip_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without this machine's pip settings (extra indexes, find-links, constraints), which
    Kaggle does not have and which would hide a missing wheel."""
    env = {key: value for key, value in base.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


# ------------------------------------------------------------------------- no network, read-only input

def isolate(python: Path, paths: KagglePaths) -> Isolation:
    """The strongest isolation this machine allows without changing it: new network and mount
    namespaces with the input bind-mounted read-only (root, or a user allowed user namespaces); else,
    as root, running as an unprivileged user that can read the environment; else file permissions.
    pip and HTTP clients are always pointed at an unroutable proxy as well."""
    as_root = os.geteuid() == 0
    prefix = namespace_prefix(paths.input_root, as_root)
    if prefix is not None:
        return Isolation(prefix=prefix, notes=["network: none (a new network namespace)",
                                               "input: read-only for every user (a read-only bind mount)"])
    notes = ["network: pip and HTTP go to an unroutable proxy (no network namespace here)"]
    if not as_root:
        return Isolation(notes=notes + ["input: read-only by its file permissions"])
    user = unprivileged_user(python)
    if user is not None:
        os.chown(paths.working_root, *user)
        return Isolation(user=user, notes=notes + [f"input: read-only (the notebook runs as user {NOBODY})"])
    return Isolation(notes=notes + [f"input: read-only NOT enforced: running as root, no mount namespace, and user "
                                    f"{NOBODY} cannot read this Python's environment"])


def namespace_prefix(input_root: Path, as_root: bool) -> list[str] | None:
    """``unshare`` with a read-only bind mount of ``input_root``, when it works here (probed)."""
    if shutil.which("unshare") is None:
        return None
    user = [] if as_root else ["--map-root-user"]
    mount_read_only = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    prefix = ["unshare", "--net", "--mount", *user, "--", "sh", "-c", mount_read_only, "sh", str(input_root)]
    probe = prefix + ["sh", "-c", '! touch "$1/.write-probe" 2>/dev/null', "sh", str(input_root)]
    try:
        works = subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        works = False
    return prefix if works else None


def unprivileged_user(python: Path) -> tuple[int, int] | None:
    """(uid, gid) of user ``nobody`` when it exists and can import torch with this environment."""
    import pwd
    try:
        entry = pwd.getpwnam(NOBODY)
    except KeyError:
        return None
    try:
        probe = subprocess.run([str(python), "-c", "import numpy, torch"], user=entry.pw_uid, group=entry.pw_gid,
                               extra_groups=[], cwd="/", capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return (entry.pw_uid, entry.pw_gid) if probe.returncode == 0 else None


def notebook_env(paths: KagglePaths, config: RehearsalConfig) -> dict[str, str]:
    env = offline_pip_env(os.environ)
    for key in ("PYTHONPATH", "VIRTUAL_ENV", RERUN_ENV, NOTEBOOK_SECONDS_ENV):
        env.pop(key, None)  # nothing from this shell may stand in for what Kaggle provides
    for key in [key for key in env if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")]:
        del env[key]
    offline = {key: UNROUTABLE_PROXY for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY",
                                                 "HTTPS_PROXY", "ALL_PROXY")}
    env.update(offline, PIP_NO_INDEX="1", HOME=str(paths.working_root),
               PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.update({kaggle_env.INPUT_ENV: str(paths.input_root), kaggle_env.WORKING_ENV: str(paths.working_root),
                RUN_TYPE_ENV: "Interactive"})
    if config.rerun:
        env[RERUN_ENV] = "True"
    if config.time_limit is not None:
        env[NOTEBOOK_SECONDS_ENV] = f"{config.time_limit:g}"
    return env


# ------------------------------------------------------------------------------------------ the run

def run_notebook(python: Path, notebook: Path, paths: KagglePaths, config: RehearsalConfig,
                 isolation: Isolation) -> tuple[list[str], bool]:
    """Run the notebook's code cells in order as one script in the working folder, as Kaggle's kernel
    does, echoing its output; kill the whole process group at the time limit. The output lines, and
    whether it was killed."""
    script = paths.working_root.parent / "notebook_cells.py"
    script.write_text("\n\n".join(code_cell_sources(notebook)))
    script.chmod(0o644)
    user = {} if isolation.user is None else {"user": isolation.user[0], "group": isolation.user[1],
                                               "extra_groups": []}
    process = subprocess.Popen(isolation.prefix + [str(python), str(script)], cwd=paths.working_root,
                               env=notebook_env(paths, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, **user)
    output: list[str] = []
    reader = threading.Thread(target=echo_lines, args=(process.stdout, output), daemon=True)
    reader.start()
    killed = False
    try:
        process.wait(timeout=config.time_limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # Kaggle stops the whole notebook at its limit
        process.wait()
        killed = True
    reader.join(timeout=10)
    return output, killed


def echo_lines(stream, output: list[str]) -> None:
    for line in stream:
        print("  | " + line, end="", flush=True)
        output.append(line)


def check_result(paths: KagglePaths, tasks: list[Task], config: RehearsalConfig, output: list[str], killed: bool,
                 seconds: float) -> None:
    """Fail on a kill, a failure mark or an invalid file; else on most tasks left with the fallback."""
    file_state = submission_state(paths.submission, tasks)
    failures = [line.strip() for line in output if FAILED_MARK in line]
    if killed:
        raise CheckFailed(f"the notebook ran past --time-limit {config.time_limit:g} s and was killed, as Kaggle "
                             f"would (there, a scoring error); {file_state}")
    if failures:
        raise CheckFailed(f"the notebook reported {len(failures)} failure(s), the first: {failures[0]}; "
                             f"{file_state}")
    submission = read_submission(paths.submission)
    validate_submission(submission, tasks)
    predicted = predicted_tasks(submission, tasks)
    print(f"rehearsal: {seconds:.0f} s for {len(tasks)} tasks; {predicted} predicted, {len(tasks) - predicted} "
          f"with the fallback attempts")
    if predicted < config.min_predicted * len(tasks):
        raise CheckFailed(f"only {predicted} of {len(tasks)} tasks were predicted (at least "
                             f"{config.min_predicted:.0%} needed); the rest kept the fallback attempts: a longer "
                             "--time-limit, or see the output above")


def submission_state(path: Path, tasks: list[Task]) -> str:
    """One clause on the file left behind, for a failure's message."""
    try:
        submission = read_submission(path)
        validate_submission(submission, tasks)
    except SubmissionError as error:
        return f"and the file is NOT valid: {error}"
    return f"{path.name} is still valid ({predicted_tasks(submission, tasks)} of {len(tasks)} tasks predicted)"


def predicted_tasks(submission: dict, tasks: list[Task]) -> int:
    """Tasks whose attempts differ from the fallback (the pre-fill the first cell writes)."""
    fallback = prefill([task.without_solutions() for task in tasks])
    return sum(submission[task.id] != fallback[task.id] for task in tasks)


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
