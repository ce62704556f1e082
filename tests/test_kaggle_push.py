"""push against a fake ``kaggle`` executable on PATH: a small script that records its arguments and
prints canned outputs, the CLI's error cases included (it exits 0 on some of them)."""

import json
import os
import sys
from pathlib import Path

import orjson
import pytest
import torch

from arc_data import load_bundled, load_kaggle
from pretrain.config import tiny
from pretrain.export import export_network
from pretrain.model import build_model
from submission.kaggle.__main__ import main
from submission.kaggle.layout import FAILED_MARK, VALID_MARK
from submission.writer import prefill

USER = "alice"
KERNEL = f"{USER}/arc-trm-submission"
DATASETS = [f"{USER}/arc-trm-code", f"{USER}/arc-trm-weights", f"{USER}/arc-trm-wheels"]

FAKE_KAGGLE = '''#!{python}
"""A stand-in for the kaggle CLI: records its arguments, answers from a scenario file."""
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
calls = Path(os.environ["FAKE_KAGGLE_CALLS"])
calls.open("a").write(json.dumps(args) + "\\n")
key = " ".join(args[:3] if args[:2] == ["datasets", "status"] else args[:2])
scenario = json.loads(Path(os.environ["FAKE_KAGGLE_SCENARIO"]).read_text())
seen = sum(1 for line in calls.read_text().splitlines()
           if " ".join(json.loads(line)[:3] if json.loads(line)[:2] == ["datasets", "status"] else json.loads(line)[:2]) == key)
replies = scenario.get(key, [{{}}])
reply = replies[min(seen, len(replies)) - 1]
if args[:2] == ["kernels", "output"]:
    folder = Path(args[args.index("-p") + 1])
    for name, text in reply.get("files", {{}}).items():
        (folder / name).write_text(text)
sys.stdout.write(reply.get("out", ""))
sys.stderr.write(reply.get("err", ""))
sys.exit(reply.get("code", 0))
'''


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    export = tmp_path_factory.mktemp("export")
    export_network(build_model(tiny()), torch.zeros(64), export)
    out = tmp_path_factory.mktemp("build")
    assert main(["build", str(out), "--checkpoint", str(export), "--user", USER, "--no-wheels"]) == 0
    return out


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """Install the fake CLI; returns (write the scenario, read the recorded calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kaggle"
    script.write_text(FAKE_KAGGLE.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_KAGGLE_SCENARIO", str(tmp_path / "scenario.json"))
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")

    def set_scenario(scenario: dict) -> None:
        (tmp_path / "scenario.json").write_text(json.dumps(scenario))

    def calls() -> list[list[str]]:
        path = tmp_path / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return set_scenario, calls


@pytest.fixture(scope="module")
def challenges(tmp_path_factory) -> Path:
    tasks = load_bundled("arc-agi-2", "eval")[:3]
    path = tmp_path_factory.mktemp("challenges") / "arc-agi_test_challenges.json"
    path.write_bytes(orjson.dumps({t.id: {"train": t.to_json()["train"],
                                          "test": [{"input": g.tolist()} for g in t.test_inputs]} for t in tasks}))
    return path


def kaggle_log(*lines: str) -> str:
    """A log as Kaggle's API returns it: a JSON list of printed chunks."""
    return json.dumps([{"stream_name": "stdout", "time": i, "data": line + "\n"} for i, line in enumerate(lines)])


def good_scenario(challenges: Path, **changes) -> dict:
    submission = json.dumps(prefill(load_kaggle(challenges)))
    scenario = {
        f"datasets status {DATASETS[0]}": [{"code": 1, "err": "404 Client Error: Not Found\n"},
                                           {"out": "pending\n"}, {"out": "ready\n"}],
        f"datasets status {DATASETS[1]}": [{"out": "ready\n"}],
        f"datasets status {DATASETS[2]}": [{"out": "ready\n"}],
        "datasets create": [{"out": "Your private Dataset is being created. Please check progress at https://x\n"}],
        "datasets version": [{"out": "Dataset version is being created. Please check progress at https://x\n"}],
        "kernels push": [{"out": "Kernel version 7 successfully pushed.  Please check progress at https://x\n"}],
        "kernels status": [{"out": f'{KERNEL} has status "KernelWorkerStatus.RUNNING"\n'},
                           {"out": f'{KERNEL} has status "KernelWorkerStatus.COMPLETE"\n'}],
        "kernels output": [{"files": {"submission.json": submission,
                                      "arc-trm-submission.log": kaggle_log("3 tasks predicted",
                                                                           f"{VALID_MARK}: valid for all 3 tasks")}}],
    }
    scenario.update(changes)
    return scenario


def run_push(build_dir, tmp_path, capsys, *extra) -> tuple[int, str, str]:
    code = main(["push", str(build_dir), "--user", USER, "--poll-seconds", "0", "--output", str(tmp_path / "output"),
                 *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_push_uploads_waits_runs_checks_and_prints_the_submit_command(build_dir, tmp_path, capsys, fake_kaggle,
                                                                     challenges):
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(challenges))
    code, out, err = run_push(build_dir, tmp_path, capsys, "--test-challenges", challenges)
    assert code == 0, err
    commands = [" ".join(call[:2]) for call in calls()]
    assert commands.count("datasets create") == 1 and commands.count("datasets version") == 2
    push_at = commands.index("kernels push")
    assert commands[push_at - 1] == "datasets status"  # the last readiness check comes right before the push
    ready_checks = [call for call in calls()[:push_at] if call[:2] == ["datasets", "status"]]
    assert [call[2] for call in ready_checks].count(DATASETS[0]) == 3  # existence, pending, ready
    assert commands[push_at + 1:] == ["kernels status", "kernels status", "kernels output"]
    assert not [call for call in calls() if call[0] == "competitions"]  # nothing is ever submitted
    assert (f"kaggle competitions submit arc-prize-2026-arc-agi-2 -k {KERNEL} -v 7 -f submission.json"
            in out)
    assert "ran cleanly" in out


@pytest.mark.parametrize("changes, code, problem", [
    ({"kernels push": [{"out": "Kernel push error: Notebook not found\n"}]}, 2, "Kernel push error: Notebook not found"),
    ({"kernels push": [{"out": "The following are not valid dataset sources and could not be added to the kernel: "
                               f"['{DATASETS[2]}']\nKernel version 8 successfully pushed.  Please check progress\n"}]},
     2, "not valid dataset sources"),
    ({"datasets create": [{"out": "Dataset creation error: slug already in use\n"}]}, 2, "Dataset creation error"),
    ({"kernels push": [{"code": 1, "err": "403 Client Error: Forbidden\n"}]}, 2, "pushing the notebook failed (exit 1)"),
    ({f"datasets status {DATASETS[1]}": [{"out": "ready\n"}, {"out": "failed\n"}]}, 2,
     f"dataset {DATASETS[1]} has status failed"),
])
def test_cli_errors_stop_the_push_even_when_it_exits_0(build_dir, tmp_path, capsys, fake_kaggle, challenges,
                                                       changes, code, problem):
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(challenges, **changes))
    status, out, err = run_push(build_dir, tmp_path, capsys)
    assert status == code
    assert err.startswith("error: ") and err.count("\n") == 1 and problem in err and "Traceback" not in err
    assert "competitions submit" not in out
    if "datasets" in problem.lower():
        assert "kernels push" not in [" ".join(call[:2]) for call in calls()]


@pytest.mark.parametrize("changes, problem", [
    ({"kernels status": [{"out": f'{KERNEL} has status "KernelWorkerStatus.ERROR"\nFailure message: "boom"\n'}]},
     "ended with status ERROR"),
    ({"kernels output": [{"files": {"submission.json": "{}", "arc-trm-submission.log": kaggle_log(
        f"{FAILED_MARK}: offline install: CalledProcessError: pip failed", f"{VALID_MARK}: valid")}}]},
     f"the first: {FAILED_MARK}: offline install"),
    ({"kernels output": [{"files": {"submission.json": "{}", "arc-trm-submission.log": kaggle_log("no mark")}}]},
     f"never says the submission is valid ({VALID_MARK})"),
    ({"kernels output": [{"files": {"arc-trm-submission.log": kaggle_log(f"{VALID_MARK}: valid")}}]},
     "has no submission.json"),
])
def test_a_run_that_failed_is_reported_with_exit_1(build_dir, tmp_path, capsys, fake_kaggle, challenges, changes,
                                                   problem):
    set_scenario, _ = fake_kaggle
    set_scenario(good_scenario(challenges, **changes))
    code, out, err = run_push(build_dir, tmp_path, capsys, "--test-challenges", challenges)
    assert code == 1
    assert err.count("\n") == 1 and problem in err and "Traceback" not in err
    assert "competitions submit" not in out


def test_an_invalid_downloaded_submission_is_a_failure(build_dir, tmp_path, capsys, fake_kaggle, challenges):
    set_scenario, _ = fake_kaggle
    submission = prefill(load_kaggle(challenges))
    first = next(iter(submission))
    del submission[first][0]["attempt_2"]
    set_scenario(good_scenario(challenges, **{"kernels output": [{"files": {
        "submission.json": json.dumps(submission), "arc-trm-submission.log": kaggle_log(f"{VALID_MARK}: ok")}}]}))
    code, _, err = run_push(build_dir, tmp_path, capsys)  # without --test-challenges: the entries' shape only
    assert code == 1 and f"task {first}: entry 0 has no 'attempt_2'" in err and "submission.json" in err


def test_push_needs_credentials_and_a_user(build_dir, tmp_path, capsys, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-config"))
    code, _, err = run_push(build_dir, tmp_path, capsys)
    assert code == 2 and "no Kaggle credentials" in err and err.count("\n") == 1
