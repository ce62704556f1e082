"""The inference options: noisy recursion (PTRM), several samples per view, test-time model settings
used only while predicting, and ``bench.inference``, which compares them on one fine-tuned network."""

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from bench import inference
from pretrain.config import tiny
from pretrain.data import PuzzleCatalogue
from pretrain.model import build_model
from submission.candidates import read_candidates
from submission.config import FinetuneConfig, cpu, fresh_model_config
from submission.finetune import Network, prediction_views, predicting, solve_task_variants
from tests.helpers import call_main, start_cli

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def one_step(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 12, (3, 100), generator=g)
    puzzle = torch.randn(3, model.config.puzzle_dim, generator=g)
    carry = model.initial_carry(3, side=10)
    return model(carry, tokens, puzzle)[1]


@pytest.mark.parametrize("arch", ["trm", "hrm"])
def test_latent_noise_perturbs_the_recursion_and_follows_torchs_seed(arch):
    model = build_model(tiny().replace(arch=arch), dtype=torch.float64).eval()
    with torch.no_grad():
        clean = one_step(model)
        model.latent_noise = 0.5
        torch.manual_seed(7)
        noisy = one_step(model)
        torch.manual_seed(7)
        again = one_step(model)
        model.latent_noise = 0.0
        clean_again = one_step(model)
    assert not torch.allclose(noisy, clean)
    assert torch.equal(noisy, again)
    assert torch.equal(clean, clean_again)


def test_predicting_applies_the_settings_only_inside_and_puts_them_back():
    model = build_model(tiny())
    config = FinetuneConfig(latent_noise=0.2, predict_overrides={"max_steps": 3, "T": 4})
    before = model.config
    with predicting(model, config):
        assert (model.config.max_steps, model.config.T, model.latent_noise) == (3, 4, 0.2)
        assert model.config.hidden == before.hidden
    assert model.config is before and model.latent_noise == 0.0
    with pytest.raises(RuntimeError), predicting(model, config):
        raise RuntimeError("a failed prediction")
    assert model.config is before and model.latent_noise == 0.0


def test_samples_per_view_repeats_whole_views_with_the_identity_first():
    task = synthetic_tasks(1, seed=3)[0]
    task = dataclasses.replace(task, test_inputs=task.test_inputs * 2)  # two test inputs
    group = PuzzleCatalogue([], [task.without_solutions()], 8, 0).groups[0]
    one = prediction_views(group, FinetuneConfig(views=5, samples_per_view=1), 10)
    three = prediction_views(group, FinetuneConfig(views=5, samples_per_view=3), 10)
    assert len(three.inputs) == 3 * len(one.inputs) == 3 * 5 * 2
    assert three.version[:6] == [0] * 6 and sorted(three.test_index[:2]) == [0, 1]
    for version in range(5):  # each view's rows three times, the same rows
        rows = [k for k, v in enumerate(three.version) if v == version]
        assert len(rows) == 6
        assert len({three.inputs[k].tobytes() for k in rows}) == len({one.inputs[k].tobytes()
                                                                     for k, v in enumerate(one.version) if v == version})


@pytest.mark.parametrize("changes, message", [({"samples_per_view": 0}, "samples_per_view"),
                                              ({"latent_noise": -0.1}, "latent_noise"),
                                              ({"predict_overrides": {"hidden": 8}}, "predict_overrides")])
def test_the_config_refuses_bad_inference_options(changes, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(**changes)


def test_variants_share_one_fine_tuning_and_count_every_sample_as_a_vote():
    network = Network.fresh_init(fresh_model_config())
    task = synthetic_tasks(1, seed=5)[0]
    config = dataclasses.replace(cpu(), num_aug=4, views=4, steps=2, batch=4, inference_batch=16)
    variants = {"base": {}, "again": {}, "noisy": {"latent_noise": 0.3, "samples_per_view": 3},
                "deeper": {"predict_overrides": {"T": 3}}}
    outcomes = solve_task_variants(task, network, config, variants, CPU)
    votes = {name: sum(c["votes"] for c in o.evidence[0]) for name, o in outcomes.items()}
    assert votes == {"base": 4, "again": 4, "noisy": 12, "deeper": 4}
    assert outcomes["base"].evidence == outcomes["again"].evidence  # one fine-tuned network, predicted alike
    assert {o.finetune_steps for o in outcomes.values()} == {2}
    with pytest.raises(ValueError, match="lr is not one of"):
        solve_task_variants(task, network, config, {"bad": {"lr": 1.0}}, CPU)


def test_bench_inference_prints_a_paired_table_and_writes_each_variants_candidates(tmp_path, capsys):
    prefix = tmp_path / "run"
    code, out, err = call_main(inference.main, capsys, "--source", "synthetic:2/9/colour_map", "--fresh",
                               "--steps", "2", "--seeds", "0,1", "--workers", "1", "--set", "num_aug=4", "views=4",
                               "batch=4", "--variant", "base={}", "--variant", 'noisy={"latent_noise": 0.5}',
                               "--candidates", str(prefix))
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| base |") or line.startswith("| noisy |")]
    assert len(rows) == 2 * 7  # every selector and the oracle, for each variant
    base_vote = next(line for line in rows if line.startswith("| base | vote |"))
    assert base_vote.endswith("| +0.00 +- 0.00 | 0 / 0 |")  # the baseline against itself
    for name in ("base", "noisy"):
        lines = (tmp_path / f"run-{name}.jsonl").read_text().splitlines()
        assert len(lines) == 2 * 2  # two tasks, two seeds


def test_bench_inference_writes_each_tasks_candidates_as_it_ends(tmp_path):
    tasks = synthetic_tasks(2, 9, families=("colour_map",))
    config = dataclasses.replace(cpu(), num_aug=4, views=4, batch=4, steps=2)
    networks = {0: Network.fresh_init(fresh_model_config(), seed=0)}
    variants = {"base": {}, "noisy": {"latent_noise": 0.5}}
    outcomes = inference.run_variants(tasks, networks, config, variants, workers=1, candidates=str(tmp_path / "run"))
    for name in variants:  # written by the jobs themselves: main's final rewrite never ran
        records = read_candidates([tmp_path / f"run-{name}.jsonl"])
        assert sorted(r["task"] for r in records) == sorted(outcomes[0][name]) == sorted(t.id for t in tasks)


def test_bench_inference_refuses_a_variant_that_changes_the_fine_tuning(capsys):
    code, out, err = call_main(inference.main, capsys, "--fresh", "--variant", 'bad={"lr": 1.0}')
    assert code == 2
    assert err.strip().count("\n") == 0 and "lr is not one of" in err


@pytest.mark.cli
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_bench_inference_workers_end_when_the_command_is_killed(tmp_path):
    process = start_cli(["-m", "bench.inference", "--source", "synthetic:4/9/colour_map", "--fresh", "--steps", "100000",
                         "--seeds", "0", "--workers", "2"])
    deadline = time.monotonic() + 120
    while len(children(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    workers = children(process.pid)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(20)  # until they are fine-tuning (a worker still starting up ends with its parent anyway)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(alive(pid) for pid in workers)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and "spawn_main" in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
