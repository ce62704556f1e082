"""The notebook's first cell: a valid submission.json first, with the standard library alone.

Anything later may fail (a dataset that is not attached, a wheel that does not install, a broken
checkpoint), and a missing file is a scoring error for the whole entry; later cells only replace it
with a better valid one. The cell runs before the project is installed, so this file imports nothing
outside the standard library. The notebook build copies its text into the cell as it is, except
SETTINGS, which it writes from the project's own constants (``notebook.fallback_settings``); a test
keeps the values below equal to those, so this file also runs on its own:

    python fallback_cell.py    # with ARC_KAGGLE_INPUT / ARC_KAGGLE_WORKING pointing at test folders

The later cells run in the same namespace and use its names: the imports, INPUT, WORKING,
SUBMISSION, NOTEBOOK_STARTED, CHALLENGES, FALLBACK, report_failure, find_test_challenges,
is_valid_submission and write_atomically.
"""

import json, os, subprocess, sys, tempfile, time  # the later cells use them all
from pathlib import Path

# Written by the notebook build; do not edit by hand (a test compares them with the project's).
SETTINGS = {
    "input_env": "ARC_KAGGLE_INPUT",
    "default_input": "/kaggle/input",
    "working_env": "ARC_KAGGLE_WORKING",
    "default_working": "/kaggle/working",
    "submission_file": "submission.json",
    "test_challenges": "arc-agi_test_challenges.json",
    "competition_globs": ["competitions/*/arc-agi_test_challenges.json", "*/arc-agi_test_challenges.json"],
    "failed_mark": "ARC_NOTEBOOK_FAILED",
}

NOTEBOOK_STARTED = time.monotonic()
INPUT = Path(os.environ.get(SETTINGS["input_env"]) or SETTINGS["default_input"])
WORKING = Path(os.environ.get(SETTINGS["working_env"]) or SETTINGS["default_working"])
SUBMISSION = WORKING / SETTINGS["submission_file"]
CHALLENGES, FALLBACK = {}, None  # set by main(): the challenges read, and the fallback file's bytes


def report_failure(step, error):
    """A failed step is printed, never raised: the notebook must end normally for the file to score."""
    print(f"{SETTINGS['failed_mark']}: {step}: {type(error).__name__}: {error}", flush=True)


def keep_numba_cache_out():
    """numba caches compiled kernels beside their source, or in NUMBA_CACHE_DIR. Kaggle keeps everything
    under the working folder as the notebook's output, so the cache goes to a temporary folder, set
    before any process imports numba: the output folder holds the submission alone."""
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cache-")


def report_gpus():
    """One line "GPUs: N" (push refuses a run with fewer than the preset expects), then one per GPU."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=60)
        found = [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        found = []  # no nvidia-smi, or it failed: no GPU this notebook can use
    print(f"GPUs: {len(found)}" + "".join(f"\n  GPU {i}: {line}" for i, line in enumerate(found)), flush=True)


def find_test_challenges(input_root):
    """The competition's own folder first (as submission.kaggle_env does), then the shallowest copy."""
    for pattern in SETTINGS["competition_globs"]:
        found = sorted(input_root.glob(pattern))
        if found:
            return found[0]
    name = SETTINGS["test_challenges"]
    deeper = sorted(input_root.rglob(name), key=lambda path: (len(path.parts), str(path)))
    if not deeper:
        raise FileNotFoundError(f"no {name} under {input_root}: is the competition attached?")
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
    return {task_id: [{"attempt_1": test["input"] if is_grid(test.get("input")) else [[0]], "attempt_2": [[0]]}
                      for test in task["test"]] for task_id, task in challenges.items()}


def write_atomically(path, data):
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def main():
    """Print the Python and the GPUs, then write the fallback file. Returns the challenges and the
    fallback's bytes as far as they were made ({} and None when the challenges could not be read):
    the last cell checks against the one and puts the other back."""
    keep_numba_cache_out()
    print(f"Python {sys.version.split()[0]}", flush=True)
    report_gpus()
    challenges, fallback = {}, None
    try:
        challenges = json.loads(find_test_challenges(INPUT).read_bytes())
        fallback = json.dumps(fallback_submission(challenges)).encode()
        WORKING.mkdir(parents=True, exist_ok=True)
        write_atomically(SUBMISSION, fallback)
        print(f"wrote the fallback {SUBMISSION}: {len(challenges)} tasks", flush=True)
    except Exception as error:  # any failure is reported; the notebook goes on to its last cell
        report_failure("fallback submission", error)
    return challenges, fallback


if __name__ == "__main__":  # a notebook cell runs as __main__ too
    CHALLENGES, FALLBACK = main()
