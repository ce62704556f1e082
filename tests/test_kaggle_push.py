"""push against a fake ``kaggle`` executable on PATH: a small script that records its arguments and
prints canned outputs, the CLI's error cases included (it exits 0 on some of them)."""

import json
import os
import shutil
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
from submission.kaggle.layout import BUILD_FILE, FAILED_MARK, VALID_MARK
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


def build_info(build_dir: Path) -> dict:
    return json.loads((build_dir / "code" / BUILD_FILE).read_text())


def run_log(build_dir: Path, gpus: int | None = 4, *extra: str) -> str:
    """What a clean run of this build prints: the GPU count, the build and preset, the valid mark."""
    info = build_info(build_dir)
    gpu_lines = [] if gpus is None else [f"GPUs: {gpus}"] + [f"  GPU {i}: NVIDIA L4, 23034 MiB" for i in range(gpus)]
    return kaggle_log("Python 3.12.11", *gpu_lines, f"build {info['build']}: preset {info['preset']}",
                      "3 tasks predicted", *extra, f"{VALID_MARK}: valid for all 3 tasks")


def status_json(status: str, version: int) -> dict:
    """A reply of ``kaggle datasets status ID --format json``."""
    return {"out": json.dumps({"status": status, "current_version_number": version}) + "\n"}


def good_scenario(build_dir: Path, challenges: Path, **changes) -> dict:
    submission = json.dumps(prefill(load_kaggle(challenges)))
    scenario = {
        "--version": [{"out": "Kaggle CLI 2.2.5\n"}],
        # The first dataset is new (created as version 1), the others get a new version each.
        f"datasets status {DATASETS[0]}": [{"code": 1, "err": "404 Client Error: Not Found\n"},
                                           status_json("pending", 1), status_json("ready", 1)],
        f"datasets status {DATASETS[1]}": [status_json("ready", 3), status_json("ready", 4)],
        f"datasets status {DATASETS[2]}": [status_json("ready", 2), status_json("ready", 3)],
        "datasets create": [{"out": "Your private Dataset is being created. Please check progress at https://x\n"}],
        "datasets version": [{"out": "Dataset version is being created. Please check progress at https://x\n"}],
        "kernels push": [{"out": "Kernel version 7 successfully pushed.  Please check progress at https://x\n"}],
        "kernels status": [{"out": f'{KERNEL}/7 has status "KernelWorkerStatus.RUNNING"\n'},
                           {"out": f'{KERNEL}/7 has status "KernelWorkerStatus.COMPLETE"\n'}],
        "kernels output": [{"files": {"submission.json": submission, "arc-trm-submission.log": run_log(build_dir)}}],
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
    set_scenario(good_scenario(build_dir, challenges))
    code, out, err = run_push(build_dir, tmp_path, capsys, "--test-challenges", challenges)
    assert code == 0, err
    commands = [" ".join(call[:2]) for call in calls()]
    assert commands.count("datasets create") == 1 and commands.count("datasets version") == 2
    push_at = commands.index("kernels push")
    assert commands[push_at - 1] == "datasets status"  # the last readiness check comes right before the push
    ready_checks = [call for call in calls()[:push_at] if call[:2] == ["datasets", "status"]]
    assert [call[2] for call in ready_checks].count(DATASETS[0]) == 3  # existence, pending, ready
    assert all(call[3:] == ["--format", "json"] for call in ready_checks)  # with the version number
    assert commands[push_at + 1:] == ["kernels status", "kernels status", "kernels output"]
    assert {call[2] for call in calls()[push_at + 1:]} == {f"{KERNEL}/7"}  # the version pushed, not the latest
    for dataset, version in zip(DATASETS, (1, 4, 3)):
        assert f"dataset {dataset} version {version} is ready" in out
    assert f"ran build {build_info(build_dir)['build']} (preset kaggle-nvarc) on 4 GPU(s)" in out
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
    ({f"datasets status {DATASETS[1]}": [status_json("ready", 3), status_json("failed", 4)]}, 2,
     f"dataset {DATASETS[1]} version 4 has status failed"),
    ({f"datasets status {DATASETS[1]}": [status_json("ready", 3), status_json("ready", 5)]}, 2,
     f"dataset {DATASETS[1]} is at version 5, past version 4 that this push uploaded"),
    ({f"datasets status {DATASETS[1]}": [status_json("ready", 3), {"out": "ready\n"}]}, 2,
     f"unexpected status output for {DATASETS[1]}"),
])
def test_cli_errors_stop_the_push_even_when_it_exits_0(build_dir, tmp_path, capsys, fake_kaggle, challenges,
                                                       changes, code, problem):
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(build_dir, challenges, **changes))
    status, out, err = run_push(build_dir, tmp_path, capsys)
    assert status == code
    assert err.startswith("error: ") and err.count("\n") == 1 and problem in err and "Traceback" not in err
    assert "competitions submit" not in out
    if "datasets" in problem.lower():
        assert "kernels push" not in [" ".join(call[:2]) for call in calls()]


@pytest.mark.parametrize("changes, problem", [
    ({"kernels status": [{"out": f'{KERNEL}/7 has status "KernelWorkerStatus.ERROR"\nFailure message: "boom"\n'}]},
     "ended with status ERROR"),
    ({"kernels output": [{"files": {"submission.json": "{}", "arc-trm-submission.log": kaggle_log(
        f"{FAILED_MARK}: offline install: CalledProcessError: pip failed", f"{VALID_MARK}: valid")}}]},
     f"the first: {FAILED_MARK}: offline install"),
    ({"kernels output": [{"files": {"submission.json": "{}", "arc-trm-submission.log": kaggle_log("no mark")}}]},
     f"never says the submission is valid ({VALID_MARK})"),
    ({"kernels output": [{"files": {"arc-trm-submission.log": "RUN LOG"}}]}, "has no submission.json"),
    ({"kernels output": [{"files": {"submission.json": "{}", "arc-trm-submission.log": kaggle_log(
        "GPUs: 4", "build 20260101-000000-0000abcd: preset kaggle-nvarc", f"{VALID_MARK}: valid")}}]},
     "does not name this build"),
])
def test_a_run_that_failed_is_reported_with_exit_1(build_dir, tmp_path, capsys, fake_kaggle, challenges, changes,
                                                   problem):
    set_scenario, _ = fake_kaggle
    for reply in changes.get("kernels output", []):
        reply["files"] = {name: run_log(build_dir) if text == "RUN LOG" else text
                          for name, text in reply["files"].items()}
    set_scenario(good_scenario(build_dir, challenges, **changes))
    code, out, err = run_push(build_dir, tmp_path, capsys, "--test-challenges", challenges)
    assert code == 1
    assert err.count("\n") == 1 and problem in err and "Traceback" not in err
    assert "competitions submit" not in out


def test_an_invalid_downloaded_submission_is_a_failure(build_dir, tmp_path, capsys, fake_kaggle, challenges):
    set_scenario, _ = fake_kaggle
    submission = prefill(load_kaggle(challenges))
    first = next(iter(submission))
    del submission[first][0]["attempt_2"]
    set_scenario(good_scenario(build_dir, challenges, **{"kernels output": [{"files": {
        "submission.json": json.dumps(submission), "arc-trm-submission.log": run_log(build_dir)}}]}))
    code, _, err = run_push(build_dir, tmp_path, capsys)  # without --test-challenges: the entries' shape only
    assert code == 1 and f"task {first}: entry 0 has no 'attempt_2'" in err and "submission.json" in err


def test_push_needs_credentials_and_a_user(build_dir, tmp_path, capsys, monkeypatch):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-config"))
    code, _, err = run_push(build_dir, tmp_path, capsys)
    assert code == 2 and "no Kaggle credentials" in err and err.count("\n") == 1


@pytest.mark.parametrize("gpus, problem", [
    (1, "notebook version 7 ran on 1 GPU(s); preset kaggle-nvarc expects 4 (Kaggle's 4x L4 machine)"),
    (0, "ran on 0 GPU(s); preset kaggle-nvarc expects 4"),
    (None, "the notebook's log has no 'GPUs: N' line"),
])
def test_a_run_on_fewer_gpus_than_the_preset_expects_is_refused(build_dir, tmp_path, capsys, fake_kaggle, challenges,
                                                               gpus, problem):
    set_scenario, _ = fake_kaggle
    submission = json.dumps(prefill(load_kaggle(challenges)))
    set_scenario(good_scenario(build_dir, challenges, **{"kernels output": [{"files": {
        "submission.json": submission, "arc-trm-submission.log": run_log(build_dir, gpus)}}]}))
    code, out, err = run_push(build_dir, tmp_path, capsys, "--test-challenges", challenges)
    assert code == 1 and err.count("\n") == 1 and problem in err and "Traceback" not in err
    assert "competitions submit" not in out


def test_a_placeholder_build_runs_without_gpus(tmp_path, capsys, fake_kaggle, challenges):
    export = tmp_path / "export"
    export_network(build_model(tiny()), torch.zeros(64), export)
    placeholder = tmp_path / "build"
    assert main(["build", str(placeholder), "--checkpoint", str(export), "--user", USER, "--no-wheels",
                 "--preset", "kaggle-placeholder"]) == 0
    assert build_info(placeholder)["gpus"] == 0
    set_scenario, _ = fake_kaggle
    set_scenario(good_scenario(placeholder, challenges, **{"kernels output": [{"files": {
        "submission.json": json.dumps(prefill(load_kaggle(challenges))),
        "arc-trm-submission.log": run_log(placeholder, 0)}}]}))
    code, out, err = run_push(placeholder, tmp_path, capsys)
    assert code == 0, err
    assert "(preset kaggle-placeholder) on 0 GPU(s)" in out


def test_push_waits_for_the_dataset_version_it_uploaded(build_dir, tmp_path, capsys, fake_kaggle, challenges):
    """"ready" at the previous version is not ready: the notebook would attach the old files."""
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(build_dir, challenges, **{f"datasets status {DATASETS[1]}": [
        status_json("ready", 3), status_json("ready", 3), status_json("pending", 4), status_json("ready", 4)]}))
    code, out, err = run_push(build_dir, tmp_path, capsys)
    assert code == 0, err
    checks = [call for call in calls() if call[:3] == ["datasets", "status", DATASETS[1]]]
    assert len(checks) == 4  # before the upload, then version 3 (old), 4 pending, 4 ready
    assert f"dataset {DATASETS[1]} version 4 is ready" in out


@pytest.mark.parametrize("version", ["Kaggle CLI 2.1.0", "Kaggle API 1.6.17", "no version here"])
def test_an_old_kaggle_cli_is_refused_before_any_upload(build_dir, tmp_path, capsys, fake_kaggle, challenges, version):
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(build_dir, challenges, **{"--version": [{"out": version + "\n"}]}))
    code, out, err = run_push(build_dir, tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ("push needs 2.2.5 or newer" in err) if "." in version else ("printed no version" in err)
    assert [call[0] for call in calls()] == ["--version"]


def test_push_refuses_a_build_for_another_competition(build_dir, tmp_path, capsys, fake_kaggle, challenges):
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(build_dir, challenges))
    code, _, err = run_push(build_dir, tmp_path, capsys, "--competition", "arc-prize-2025")
    assert code == 2 and "was built for arc-prize-2026-arc-agi-2, not arc-prize-2025" in err
    assert not [call for call in calls() if call[0] == "datasets"]


def test_push_refuses_a_build_without_its_build_file(build_dir, tmp_path, capsys, fake_kaggle, challenges):
    old = tmp_path / "old-build"
    shutil.copytree(build_dir, old)
    (old / "code" / BUILD_FILE).unlink()
    set_scenario, calls = fake_kaggle
    set_scenario(good_scenario(build_dir, challenges))
    code, _, err = run_push(old, tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1 and f"{BUILD_FILE}: cannot be read" in err and "run build again" in err
    assert not calls()


def test_files_an_earlier_push_left_never_pass_for_this_run(build_dir, tmp_path, capsys, fake_kaggle, challenges):
    output = tmp_path / "output"
    output.mkdir()
    (output / "arc-trm-submission.log").write_text(run_log(build_dir))  # a clean earlier run of the same build
    (output / "submission.json").write_text(json.dumps(prefill(load_kaggle(challenges))))
    set_scenario, _ = fake_kaggle
    set_scenario(good_scenario(build_dir, challenges, **{"kernels output": [{"files": {}}]}))  # this run: nothing
    code, out, err = run_push(build_dir, tmp_path, capsys)
    assert code == 2 and "no log downloaded" in err and "competitions submit" not in out
