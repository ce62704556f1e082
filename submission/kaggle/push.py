"""Upload a build with the ``kaggle`` CLI, run the notebook on Kaggle and check what it produced.

In order: upload the three datasets (a new version where one exists), wait until each is ready,
push the notebook (which runs it), wait for the run to end, download its output and log, check that
``submission.json`` is valid and that the log holds no failure mark, and print the exact command
that submits that notebook version. It never submits: a submission spends the day's only attempt.

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
from submission.kaggle.layout import (FAILED_MARK, KERNEL_SLUG, USER_PLACEHOLDER, VALID_MARK, CheckFailed, Layout,
                                      PackagingError, check_competition, run_checked)
from submission.writer import SubmissionError, read_submission, validate_entry_counts, validate_submission

# What the CLI prints, exit status 0 or not, when a step did not happen.
CLI_ERRORS = re.compile(r"Kernel push error|creation error|are not valid (dataset|competition|kernel|model) sources"
                        r"|User cancelled operation", re.IGNORECASE)
DATASET_FAILED = ("failed", "deleted")
KERNEL_RUNNING = ("QUEUED", "RUNNING", "NEW_SCRIPT")
KERNEL_FAILED = ("ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")


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
    run_timeout: float = 13 * 3600.0  # seconds to wait for the notebook's run (Kaggle's limit is 12 h)

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
    """Before any work, so a missing credential costs no build or upload."""
    check_competition(competition)
    if not has_kaggle_credentials():
        raise PackagingError("no Kaggle credentials (~/.kaggle/kaggle.json, ~/.kaggle/access_token, "
                             "KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY); nothing pushed")
    if user == USER_PLACEHOLDER:
        raise PackagingError("pushing needs --user NAME (or KAGGLE_USERNAME): the ids name the owner")


def push(config: PushConfig) -> int:
    """The whole flow; returns the notebook version that ran cleanly."""
    check_can_push(config.user, config.competition)
    for slug, folder in config.layout.datasets().items():
        upload_dataset(config, slug, folder)
    for slug in config.layout.datasets():
        wait_until_ready(config, config.dataset_id(slug))
    version = push_notebook(config)
    status = wait_for_run(config, version)
    log = download_output(config)
    check_log(log, config.output_dir)
    if status != "COMPLETE":
        raise CheckFailed(f"notebook version {version} ended with status {status}; see its log in "
                             f"{config.output_dir}")
    count = check_submission(config.output_dir / "submission.json", config.challenges)
    print(f"notebook version {version} ran cleanly: {config.output_dir / 'submission.json'} is valid ({count} "
          f"tasks) and its log has no {FAILED_MARK}")
    print("to submit this version (one submission a day; this tool never submits):")
    print(f"  {submit_command(config, version)}")
    return version


def submit_command(config: PushConfig, version: int) -> str:
    return (f"kaggle competitions submit {config.competition} -k {config.kernel} -v {version} -f submission.json "
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


def dataset_status(dataset_id: str) -> str | None:
    """The dataset's status word ("ready", ...), or None when it does not exist (or cannot be read)."""
    try:
        output = cli(["datasets", "status", dataset_id], f"reading the status of {dataset_id}", echo=False)
    except PackagingError:
        return None
    words = output.strip().split()
    return words[-1].lower() if words else None


def upload_dataset(config: PushConfig, slug: str, folder: Path) -> None:
    dataset_id = config.dataset_id(slug)
    if dataset_status(dataset_id) is None:
        action = ["create"]
    else:
        action = ["version", "-m", config.message or f"build {time.strftime('%Y-%m-%d %H:%M')}"]
    cli(["datasets", *action, "-p", str(folder), "-r", "zip"], f"uploading {dataset_id}")


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


def wait_until_ready(config: PushConfig, dataset_id: str) -> None:
    def ready() -> str | None:
        status = dataset_status(dataset_id)
        if status in DATASET_FAILED:
            raise PackagingError(f"dataset {dataset_id} has status {status}; see its page on kaggle.com")
        return status if status == "ready" else None
    poll(ready, config.dataset_timeout, config.poll_seconds, f"dataset {dataset_id} to be ready")
    print(f"dataset {dataset_id} is ready")


def push_notebook(config: PushConfig) -> int:
    output = cli(["kernels", "push", "-p", str(config.layout.notebook)], "pushing the notebook")
    match = re.search(r"Kernel version (\d+) successfully", output)
    if match is None:
        raise PackagingError(f"pushing the notebook printed no version number: {output.strip()[-200:]!r}")
    return int(match.group(1))


def wait_for_run(config: PushConfig, version: int) -> str:
    """The final status of the notebook's run ("COMPLETE", "ERROR", ...)."""
    def finished() -> str | None:
        output = cli(["kernels", "status", config.kernel], f"reading the status of {config.kernel}", echo=False)
        match = re.search(r'has status "(?:\w+\.)?(\w+)"', output)
        if match is None:
            raise PackagingError(f"unexpected status output for {config.kernel}: {output.strip()!r}")
        status = match.group(1).upper()
        if status in KERNEL_RUNNING:
            return None
        if status in KERNEL_FAILED:
            print(output.strip())
        return status
    status = poll(finished, config.run_timeout, config.poll_seconds, f"notebook version {version} to finish")
    print(f"notebook version {version}: {status}")
    return status


def download_output(config: PushConfig) -> str:
    """Download the notebook's files and log into ``output_dir``; the log's text."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    cli(["kernels", "output", config.kernel, "-p", str(config.output_dir), "-o"], f"downloading {config.kernel}'s output",
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


def check_submission(path: Path, challenges: Path | None) -> int:
    """Validate the downloaded file: against the challenges when given, else each entry's shape and grids.
    Returns the number of tasks."""
    if not path.is_file():
        raise CheckFailed(f"the notebook's output has no submission.json ({path})")
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
