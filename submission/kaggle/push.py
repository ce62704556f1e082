"""Upload a build with the ``kaggle`` CLI, run the notebook on Kaggle and check what it produced.

In order: upload the three datasets (a new version where one exists), wait until each is ready at
the version this push uploaded, push the notebook (which runs it), wait for that notebook version's
run to end (``owner/slug/N``, never "the latest"), download its output and log, check that
``submission.json`` is valid, that the log holds no failure mark, names this build and shows the
GPUs the build's preset expects, and print the exact command that submits that notebook version.
It never submits: a submission spends the day's only attempt.

The CLI exits 0 on some errors it prints ("Kernel push error: ...", sources it could not attach),
so every command's output is read as well as its exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from arc_data import load_kaggle
from pretrain.kaggle_facts import KAGGLE_WALL_SECONDS, SUBMISSION_FILE
from submission.kaggle.layout import (FAILED_MARK, KERNEL_SLUG, USER_PLACEHOLDER, VALID_MARK, CheckFailed, Layout,
                                      PackagingError, check_competition, gpus_in_log, read_build_file, run_checked)
from submission.writer import SubmissionError, read_submission, validate_entry_counts, validate_submission

# What the CLI prints, exit status 0 or not, when a step did not happen.
CLI_ERRORS = re.compile(r"Kernel push error|creation error|are not valid (dataset|competition|kernel|model) sources"
                        r"|User cancelled operation", re.IGNORECASE)
DATASET_FAILED = ("failed", "deleted")
KERNEL_RUNNING = ("QUEUED", "RUNNING", "NEW_SCRIPT")
KERNEL_FAILED = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
# The oldest kaggle CLI push accepts: the release it was checked against, whose ``kernels status``
# and ``kernels output`` act on the N of ``owner/slug/N`` (earlier 2.2 releases parsed the version and
# then dropped it, answering for the latest run under version N's name), and its ``datasets status``
# has ``--format json`` with the dataset's current version number (since 2.1.1).
MIN_CLI = (2, 2, 5)


@dataclass(frozen=True)
class PushConfig:
    layout: Layout  # a finished build
    user: str  # Kaggle username owning the datasets and the notebook
    competition: str
    output_dir: Path  # where the notebook's output and log are downloaded
    challenges: Path | None = None  # the visible test file, to check the downloaded submission against
    message: str = ""  # the datasets' version note (default: the time of the push)
    poll_seconds: float = 30.0  # between two status checks
    dataset_timeout: float = 3600.0  # seconds to wait for each dataset to be ready
    run_timeout: float = KAGGLE_WALL_SECONDS + 3600.0  # to wait for the notebook's run: Kaggle's limit and an hour

    def dataset_id(self, slug: str) -> str:
        return f"{self.user}/{slug}"

    @property
    def kernel(self) -> str:
        return f"{self.user}/{KERNEL_SLUG}"


def has_kaggle_credentials() -> bool:
    """Whether the kaggle CLI can authenticate: a token or key in the environment, or a credentials file."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def check_can_push(user: str, competition: str) -> None:
    """Before any work, so a missing credential or an old CLI costs no build or upload."""
    check_competition(competition)
    if not has_kaggle_credentials():
        raise PackagingError("no Kaggle credentials (~/.kaggle/kaggle.json, ~/.kaggle/access_token, "
                             "KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY); nothing pushed")
    if user == USER_PLACEHOLDER:
        raise PackagingError("pushing needs --user NAME (or KAGGLE_USERNAME): the ids name the owner")
    check_cli_version()


def check_cli_version() -> None:
    output = run_checked(kaggle_cli() + ["--version"], "asking the kaggle CLI its version")
    match = re.search(r"Kaggle (?:CLI|API) (\d+)\.(\d+)\.(\d+)", output)
    if match is None:
        raise PackagingError(f"the kaggle CLI printed no version: {output.strip()[-200:]!r}")
    found = tuple(int(part) for part in match.groups())
    if found < MIN_CLI:
        needed = ".".join(map(str, MIN_CLI))
        raise PackagingError(f"the kaggle CLI is {'.'.join(map(str, found))}; push needs {needed} or newer, which "
                             f"checks the exact notebook and dataset versions it started: pip install -U "
                             f"'kaggle>={needed}'; nothing pushed")


def push(config: PushConfig) -> int:
    """The whole flow; returns the notebook version that ran cleanly."""
    check_can_push(config.user, config.competition)
    build = read_build_file(config.layout)
    if build.get("competition", config.competition) != config.competition:
        raise PackagingError(f"{config.layout.root} was built for {build['competition']}, not {config.competition}; "
                             "build again with --competition")
    uploaded = {slug: upload_dataset(config, slug, folder) for slug, folder in config.layout.datasets().items()}
    for slug, version in uploaded.items():
        wait_until_ready(config, config.dataset_id(slug), version)
    version = push_notebook(config)
    status = wait_for_run(config, version)
    log = download_output(config, version)
    check_log(log, config.output_dir)
    if status != "COMPLETE":
        raise CheckFailed(f"notebook version {version} ended with status {status}; see its log in "
                             f"{config.output_dir}")
    check_build(log, build, config.output_dir)
    gpus = check_gpus(log, build, version, config.output_dir)
    count = check_submission(config.output_dir / SUBMISSION_FILE, config.challenges)
    print(f"notebook version {version} ran cleanly: {config.output_dir / SUBMISSION_FILE} is valid ({count} "
          f"tasks), its log has no {FAILED_MARK}, and it ran build {build['build']} (preset {build['preset']}) "
          f"on {gpus} GPU(s)")
    print("to submit this version (one submission a day; this tool never submits):")
    print(f"  {submit_command(config, version)}")
    return version


def submit_command(config: PushConfig, version: int) -> str:
    return (f"kaggle competitions submit {config.competition} -k {config.kernel} -v {version} -f {SUBMISSION_FILE} "
            f"-m 'TRM, notebook version {version}'")


def kaggle_cli() -> list[str]:
    """The ``kaggle`` executable on PATH, else the module of this Python."""
    found = shutil.which("kaggle")
    return [found] if found else [sys.executable, "-m", "kaggle"]


def cli(arguments: list[str], what: str, echo: bool = True) -> str:
    """Run ``kaggle ARGUMENTS``; a non-zero exit or a printed error is a failure, in one line."""
    output = run_checked(kaggle_cli() + arguments, what, echo=echo)
    for line in output.splitlines():
        if CLI_ERRORS.search(line):
            raise PackagingError(f"{what} failed: {line.strip()}")
    return output


def dataset_status(dataset_id: str) -> tuple[str, int] | None:
    """The dataset's status word ("ready", ...) and current version number, or None when it does not
    exist (or cannot be read)."""
    try:
        output = cli(["datasets", "status", dataset_id, "--format", "json"], f"reading the status of {dataset_id}",
                     echo=False)
    except PackagingError:
        return None
    for line in reversed(output.splitlines()):  # the JSON line; the CLI may print a warning before it
        if line.strip().startswith("{"):
            try:
                state = orjson.loads(line)
                return str(state["status"]).lower(), int(state["current_version_number"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                break
    raise PackagingError(f"unexpected status output for {dataset_id}: {output.strip()[-200:]!r}")


def upload_dataset(config: PushConfig, slug: str, folder: Path) -> int:
    """Upload a new dataset or a new version of one; the version number the upload will have."""
    dataset_id = config.dataset_id(slug)
    state = dataset_status(dataset_id)
    if state is None:
        action, version = ["create"], 1
    else:
        action, version = ["version", "-m", config.message or f"build {time.strftime('%Y-%m-%d %H:%M')}"], state[1] + 1
    cli(["datasets", *action, "-p", str(folder), "-r", "zip"], f"uploading {dataset_id}")
    return version


def poll(check: Callable[[], str | None], timeout: float, interval: float, what: str) -> str:
    """Call ``check`` until it returns a final value; a timeout is a failure."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise PackagingError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)


def wait_until_ready(config: PushConfig, dataset_id: str, version: int) -> None:
    """Until the version this push uploaded is the dataset's current one and ready: the notebook
    pushed next attaches the current versions."""
    def ready() -> str | None:
        state = dataset_status(dataset_id)
        if state is None:
            return None  # a dataset just created may not answer yet
        status, current = state
        if current > version:
            raise PackagingError(f"dataset {dataset_id} is at version {current}, past version {version} that this "
                                 "push uploaded: another upload ran meanwhile; push again")
        if current == version and status in DATASET_FAILED:
            raise PackagingError(f"dataset {dataset_id} version {version} has status {status}; see its page on "
                                 "kaggle.com")
        return status if current == version and status == "ready" else None
    poll(ready, config.dataset_timeout, config.poll_seconds, f"dataset {dataset_id} version {version} to be ready")
    print(f"dataset {dataset_id} version {version} is ready")


def push_notebook(config: PushConfig) -> int:
    output = cli(["kernels", "push", "-p", str(config.layout.notebook)], "pushing the notebook")
    match = re.search(r"Kernel version (\d+) successfully", output)
    if match is None:
        raise PackagingError(f"pushing the notebook printed no version number: {output.strip()[-200:]!r}")
    return int(match.group(1))


def wait_for_run(config: PushConfig, version: int) -> str:
    """The final status of that notebook version's run ("COMPLETE", "ERROR", ...)."""
    kernel = f"{config.kernel}/{version}"

    def finished() -> str | None:
        output = cli(["kernels", "status", kernel], f"reading the status of {kernel}", echo=False)
        match = re.search(r'has status "(?:\w+\.)?(\w+)"', output)
        if match is None:
            raise PackagingError(f"unexpected status output for {kernel}: {output.strip()!r}")
        status = match.group(1).upper()
        if status in KERNEL_RUNNING:
            return None
        if status in KERNEL_FAILED:
            print(output.strip())
        return status
    status = poll(finished, config.run_timeout, config.poll_seconds, f"notebook version {version} to finish")
    print(f"notebook version {version}: {status}")
    return status


def download_output(config: PushConfig, version: int) -> str:
    """Download that notebook version's files and log into ``output_dir``; the log's text. The files
    an earlier push left there go first: they must never pass for this run's."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    for name in (f"{KERNEL_SLUG}.log", SUBMISSION_FILE):
        (config.output_dir / name).unlink(missing_ok=True)
    kernel = f"{config.kernel}/{version}"
    cli(["kernels", "output", kernel, "-p", str(config.output_dir), "-o"], f"downloading {kernel}'s output",
        echo=False)
    log = config.output_dir / f"{KERNEL_SLUG}.log"
    if not log.is_file():
        raise PackagingError(f"no log downloaded ({log}); the notebook's run cannot be checked")
    return log_text(log.read_bytes())


def log_text(raw: bytes) -> str:
    """The printed text of a Kaggle log: a JSON list of {"data": ...} entries, or plain text."""
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")
    if isinstance(entries, list):
        return "".join(entry.get("data", "") for entry in entries if isinstance(entry, dict))
    return raw.decode(errors="replace")


def check_log(log: str, where: Path) -> None:
    failures = [line.strip() for line in log.splitlines() if FAILED_MARK in line]
    if failures:
        raise CheckFailed(f"the notebook reported {len(failures)} failure(s), the first: {failures[0]} "
                             f"(log in {where})")
    if VALID_MARK not in log:
        raise CheckFailed(f"the notebook's log never says the submission is valid ({VALID_MARK}); log in {where}")


def check_build(log: str, build: dict, where: Path) -> None:
    """The run used this build's code dataset (the notebook prints the id it found there)."""
    if f"build {build['build']}:" not in log:
        raise CheckFailed(f"the notebook's log does not name this build ({build['build']}): it ran another version "
                          f"of the code dataset; log in {where}")


def check_gpus(log: str, build: dict, version: int, where: Path) -> int:
    """The run had the GPUs the build's preset is sized for; the number it had."""
    gpus = gpus_in_log(log)
    if gpus is None:
        raise CheckFailed(f"the notebook's log has no 'GPUs: N' line; log in {where}")
    if gpus < build["gpus"]:
        raise CheckFailed(f"notebook version {version} ran on {gpus} GPU(s); preset {build['preset']} expects "
                          f"{build['gpus']} (Kaggle's 4x L4 machine): check machine_shape and that the competition "
                          f"is attached; log in {where}")
    return gpus


def check_submission(path: Path, challenges: Path | None) -> int:
    """Validate the downloaded file: against the challenges when given, else each entry's shape and grids.
    Returns the number of tasks."""
    if not path.is_file():
        raise CheckFailed(f"the notebook's output has no {SUBMISSION_FILE} ({path})")
    try:
        submission = read_submission(path)
        if challenges is not None:
            validate_submission(submission, load_kaggle(challenges))
        elif isinstance(submission, dict):
            validate_entry_counts(submission, {task_id: len(entries) if isinstance(entries, list) else -1
                                               for task_id, entries in submission.items()})
        else:
            validate_entry_counts(submission, {})
    except SubmissionError as error:
        raise CheckFailed(str(error.located(source=str(path)))) from None
    return len(submission)
