"""Micro-batching with gradient accumulation gives the full batch's step, and the micro-batch chooser."""

import dataclasses

import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from pretrain.config import tiny
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream
from pretrain.distributed import World
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.memory import auto_micro_batch, largest_divisor_at_most, measure_bytes_per_sample
from pretrain.model import build_model
from tests.helpers import call_main, run_cli

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


def _run(micro_batch, arch="trm", batch=6, steps=5):
    """``steps`` train steps of an fp64 tiny network on a 6x6 canvas; per step: gradients (before the
    optimizer), metrics, parameters, puzzle table, halting flags and carry."""
    config = tiny().replace(arch=arch, prefix_tokens=1 if arch == "hrm" else 4, max_steps=3, halt_exploration=0.5,
                            canvas=6)
    model = build_model(config, dtype=torch.float64, seed=3).double()
    with torch.no_grad():  # halting logits that vary between samples, so some halt early and slots refill
        model.q_head.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(4))
        model.q_head.bias.fill_(20.0)
    optim = OptimConfig(global_batch=batch, lr=1e-3, lr_warmup_steps=1, micro_batch=micro_batch)
    catalogue = PuzzleCatalogue(synthetic_tasks(6, 0, max_side=6), [], 4, 0, canvas=6)
    learner = Learner(config, optim, catalogue.num_ids, CPU, torch.float64, seed=5, model=model)
    learner.puzzles.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(6))  # samples tell apart
    stream = TrainStream(catalogue, DataConfig(train_sources=(), held_out_sources=(), num_aug=4, canvas=6))
    slots = Slots(learner.model, batch, CPU, 6)
    recorded, step_optimizer = [], learner.optimizer.step

    def record_then_step():
        recorded.append([p.grad.clone() for p in learner.model.parameters()])
        step_optimizer()

    learner.optimizer.step = record_then_step
    history = []
    for _ in range(steps):
        metrics = train_step(learner, slots, stream)
        history.append({"grads": recorded[-1], "metrics": metrics,
                        "params": [p.detach().clone() for p in learner.model.parameters()],
                        "ema": [p.detach().clone() for p in learner.ema.parameters()],
                        "puzzles": learner.puzzles.weight.clone(), "halted": slots.halted.clone(),
                        "steps": slots.steps.clone(), "carry": slots.carry.y.clone()})
    return history


def _assert_same(a, b):
    for step, (x, y) in enumerate(zip(a, b)):
        for gx, gy in zip(x["grads"], y["grads"]):
            torch.testing.assert_close(gx, gy, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {step} gradient: {m}")
        for key in ("params", "ema"):
            for px, py in zip(x[key], y[key]):
                torch.testing.assert_close(px, py, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {step} {key}: {m}")
        assert torch.equal(x["puzzles"], y["puzzles"]), f"step {step}: puzzle table"
        assert torch.equal(x["halted"], y["halted"]) and torch.equal(x["steps"], y["steps"]), f"step {step}: halting"
        torch.testing.assert_close(x["carry"], y["carry"], rtol=1e-10, atol=1e-12)
        assert x["metrics"].keys() == y["metrics"].keys()
        for name in x["metrics"]:  # metric sums are float32 (as they are all-reduced): float32 rounding
            torch.testing.assert_close(x["metrics"][name], y["metrics"][name], rtol=1e-6, atol=1e-6,
                                       msg=lambda m: f"step {step} metric {name}: {m}")


@pytest.mark.parametrize("arch", ["trm", "hrm"])
def test_micro_batches_give_the_full_batch_step(arch):
    whole = _run(None, arch)
    assert any(h["halted"].any() and not h["halted"].all() for h in whole)  # halting and refills happen
    assert whole[-1]["metrics"]["count"] > 0
    for micro in (1, 2, 4):  # 4: a ragged last micro-batch of 2
        _assert_same(_run(micro, arch), whole)


def test_the_comparison_can_fail():
    """A different global batch normalisation changes the step: the checks above would see it."""
    whole, other = _run(None), _run(None)
    other[0]["grads"][0] = other[0]["grads"][0] * 1.001
    with pytest.raises(AssertionError):
        _assert_same(other, whole)


def test_micro_batch_setting_is_validated():
    with pytest.raises(ValueError, match="micro_batch"):
        OptimConfig(micro_batch=0)
    with pytest.raises(ValueError, match="micro_batch"):
        OptimConfig(micro_batch="all")


def test_auto_micro_batch_uses_the_measured_bytes_per_sample():
    config = tiny()
    # On a CPU without a budget: the whole batch.
    assert auto_micro_batch(config, 10, 12, "cpu", torch.float32) == 12
    probe = build_model(config, dtype=torch.float32)
    cost = measure_bytes_per_sample(probe, 10)
    assert cost.method == "saved_tensors" and cost.per_sample > 0
    budget = cost.fixed + 3.5 * cost.per_sample  # room for 3 samples, not 4
    assert auto_micro_batch(config, 10, 12, "cpu", torch.float32, budget_bytes=budget) == 3
    assert auto_micro_batch(config, 10, 8, "cpu", torch.float32, budget_bytes=budget) == 2  # a divisor of 8
    assert auto_micro_batch(config, 10, 2, "cpu", torch.float32, budget_bytes=budget) == 2
    # a smaller canvas needs fewer bytes per sample, so more fit
    assert auto_micro_batch(config, 5, 12, "cpu", torch.float32, budget_bytes=budget) >= 6
    with pytest.raises(MemoryError, match="MiB"):
        auto_micro_batch(config, 10, 12, "cpu", torch.float32, budget_bytes=cost.fixed + 0.5 * cost.per_sample)


def test_largest_divisor():
    assert largest_divisor_at_most(768, 100) == 96
    assert largest_divisor_at_most(7, 6) == 1
    assert largest_divisor_at_most(12, 50) == 12


def test_auto_on_a_cpu_is_the_whole_batch():
    config = tiny()
    learner = Learner(config, OptimConfig(global_batch=8, micro_batch="auto"), 4, CPU, torch.float32)
    assert learner.micro_batch_size(10, 8) == 8
    learner.optim = dataclasses.replace(learner.optim, micro_batch=3)
    assert learner.micro_batch_size(10, 8) == 3 and learner.micro_batch_size(10, 2) == 2


@pytest.mark.cli
@pytest.mark.parametrize("micro", ["2", "auto"])
def test_cli_trains_with_micro_batches(tmp_path, micro):
    result = run_cli(["-m", "pretrain", "--preset", "tiny", "--global-batch", "8", "--micro-batch", micro,
                      "--steps", "2", "--device", "cpu", "--eval-every", "0", "--checkpoint-every", "2",
                      "--train-sources", "synthetic:8/0", "--held-out-sources", "synthetic:2/1", "--out", tmp_path])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "checkpoint.pt").exists()
    if micro == "2":
        assert "micro-batches of 2 (local batch 8" in result.stdout


@pytest.mark.parametrize("how", ["main", pytest.param("command", marks=pytest.mark.cli)])
def test_cli_rejects_a_bad_micro_batch(capsys, how):
    args = ["--micro-batch", "-3", "--dry-run"]
    if how == "main":
        from pretrain.__main__ import main
        code, _, err = call_main(main, capsys, *args)
    else:
        result = run_cli(["-m", "pretrain", *args], timeout=120)
        code, err = result.returncode, result.stderr
    assert code == 2 and "--micro-batch" in err
