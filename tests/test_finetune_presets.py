"""Fine-tuning presets: test-time model overrides, one joint shard per worker, the Kaggle default."""

import dataclasses

import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from make_submission import parse_args, resolve
from submission import finetune, kaggle_env
from submission.config import (CPU_COMPILE_MIN_SECONDS, FINETUNE_PRESETS, FinetuneConfig, compile_for_run, cpu,
                               fresh_model_config)
from submission.finetune import Network, solve_task
from submission.runner import run_submission


def test_model_overrides_only_take_fields_that_keep_the_weights():
    FinetuneConfig(model_overrides={"T": 4, "max_steps": 10})
    for field in ("hidden", "layers", "canvas", "puzzle_dim"):
        with pytest.raises(ValueError, match=field):
            FinetuneConfig(model_overrides={field: 1})


def test_every_preset_is_valid_and_nvarc_carries_its_test_time_cycles():
    configs = {name: make() for name, make in FINETUNE_PRESETS.items()}
    nvarc = configs["kaggle-nvarc"]
    assert nvarc.model_overrides == {"T": 4, "max_steps": 10}
    assert (nvarc.selector, nvarc.shard_per_worker, nvarc.embedding_steps) == ("vote", True, 0)
    assert (nvarc.lr, nvarc.warmup_steps, nvarc.num_aug) == (1e-4, 200, 128)


def test_a_cpu_run_compiles_only_when_it_is_long_enough():
    long, short = CPU_COMPILE_MIN_SECONDS, CPU_COMPILE_MIN_SECONDS - 1
    assert compile_for_run(cpu(), "cpu", long).compile and not compile_for_run(cpu(), "cpu", short).compile
    assert compile_for_run(cpu(), "cuda", short).compile
    for chosen in (False, True):  # a preset's explicit choice stands
        explicit = dataclasses.replace(cpu(), compile=chosen)
        assert compile_for_run(explicit, "cpu", long).compile is chosen
        assert compile_for_run(explicit, "cuda", short).compile is chosen


def test_the_network_is_fine_tuned_and_predicted_under_the_overrides(monkeypatch):
    network = Network.fresh_init(fresh_model_config())
    built = []
    real_build = finetune.build_model

    def recording_build(config, *args, **kwargs):
        built.append(config)
        return real_build(config, *args, **kwargs)

    monkeypatch.setattr(finetune, "build_model", recording_build)
    config = dataclasses.replace(cpu(), steps=2, embedding_steps=0, batch=4, num_aug=2, views=2,
                                 model_overrides={"T": 3, "max_steps": 2})
    task = synthetic_tasks(1, seed=3, families=("colour_map",))[0]
    outcome = solve_task(task, network, config, torch.device("cpu"), seconds=float("inf"))
    assert outcome.finetune_steps == 2 and outcome.ranked[0]
    assert [(c.T, c.max_steps) for c in built] == [(3, 2)]
    assert (network.config.T, network.config.max_steps) == (2, 1)  # the caller's network is unchanged


def test_shard_per_worker_splits_the_tasks_evenly():
    joint = FinetuneConfig(shard_per_worker=True, shard_tasks=7)
    assert joint.shard_size(240, 4) == 60
    assert joint.shard_size(5, 2) == 3
    assert joint.shard_size(1, 4) == 1
    assert FinetuneConfig(shard_tasks=7).shard_size(240, 4) == 7


def test_one_joint_network_per_worker(tmp_path):
    tasks = synthetic_tasks(3, seed=9)
    config = dataclasses.replace(cpu(), steps=2, embedding_steps=0, batch=4, num_aug=2, views=2,
                                 shard_per_worker=True)
    summary = run_submission(tasks, Network.fresh_init(fresh_model_config()), config, tmp_path / "s.json",
                             time_limit=120, workers=1, quiet=True)
    assert sorted(summary.outcomes) == sorted(t.id for t in tasks)
    # One worker: one network fine-tuned on all three tasks, 2 steps per task.
    assert [o.finetune_steps for o in summary.outcomes.values()] == [6, 6, 6]


@pytest.mark.parametrize("rerun, preset", [("1", "kaggle-nvarc"), ("", "kaggle-placeholder")])
def test_the_kaggle_default_is_the_best_published_recipe(monkeypatch, tmp_path, rerun, preset):
    monkeypatch.setenv(kaggle_env.RUN_TYPE_ENV, "Batch")
    monkeypatch.setenv(kaggle_env.RERUN_ENV, rerun)
    args = resolve(parse_args(["--challenges", str(tmp_path / "challenges.json")]))
    assert args.preset == preset
