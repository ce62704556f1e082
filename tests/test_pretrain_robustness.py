"""Pretraining survives what a real machine does to it: an older torch (dynamo's option under its old
name), a run resumed on another device type (generator state, carry dtype), and running out of GPU
memory part-way through a step (forced on the CPU by raising ``torch.OutOfMemoryError``)."""

import dataclasses
import shutil
import types

import pytest
import torch
import torch._dynamo

import pretrain.learner as learner_module
from arc_data.synthetic import synthetic_tasks
from pretrain import checkpoint
from pretrain.__main__ import main
from pretrain.config import tiny as tiny_model
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream
from pretrain.distributed import World, setup_world
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.model import build_model
from pretrain.presets import tiny
from pretrain.trainer import Trainer

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
CANVAS, BATCH = 6, 8
# What a CUDA generator's get_state() holds (seed and offset, 16 bytes): not a CPU generator's size.
CUDA_GENERATOR_STATE = torch.zeros(16, dtype=torch.uint8)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- torch before 2.7 --------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("cache_size_limit",), ("recompile_limit", "cache_size_limit")])
def test_compile_step_raises_the_recompile_limit_under_either_name(monkeypatch, names):
    """Before torch 2.7 dynamo's option is ``cache_size_limit``; from 2.7 ``recompile_limit``."""
    fake = types.SimpleNamespace(**{name: 8 for name in names})
    monkeypatch.setattr(torch._dynamo, "config", fake)
    monkeypatch.setattr(torch, "compile", lambda function, **options: function)
    model = build_model(tiny_model())
    model.compile_step(recompile_limit=64)
    assert getattr(fake, names[0]) == 64 and model.compiled
    assert vars(fake).keys() == set(names)  # no option invented under the other name


# -- resuming on another device type ---------------------------------------------------------------


def _tiny_learner(step: int = 0) -> Learner:
    learner = Learner(tiny_model(), OptimConfig(global_batch=4), 4, CPU, torch.float32, seed=11)
    learner.step = step
    return learner


def test_a_halting_generator_from_another_device_type_is_reseeded_from_seed_and_step(capsys):
    state = _tiny_learner(step=7).state_dict()
    state["halt_generator"] = CUDA_GENERATOR_STATE
    draws = []
    for _ in range(2):
        learner = _tiny_learner()
        learner.load_state_dict(state)
        draws.append(torch.rand(5, generator=learner.halt_generator))
    assert torch.equal(draws[0], draws[1])
    assert capsys.readouterr().out.count("reseeded from seed 11 and step 7") == 2
    later = dict(state, step=8)
    learner = _tiny_learner()
    learner.load_state_dict(later)
    assert not torch.equal(torch.rand(5, generator=learner.halt_generator), draws[0])


def test_a_halting_generator_from_the_same_device_type_is_restored_exactly(capsys):
    saved = _tiny_learner()
    torch.rand(3, generator=saved.halt_generator)  # somewhere past its seed
    state = saved.state_dict()
    learner = _tiny_learner()
    learner.load_state_dict(state)
    assert torch.equal(learner.halt_generator.get_state(), saved.halt_generator.get_state())
    assert capsys.readouterr().out == ""


def short_run(steps):
    config = dataclasses.replace(tiny(), steps=steps, log_every=1, eval_every=0, checkpoint_every=2)
    config.optim = dataclasses.replace(config.optim, global_batch=8)
    config.data = dataclasses.replace(config.data, train_sources=("synthetic:12/0",), held_out_sources=())
    return config


def test_a_checkpoint_from_another_device_type_resumes_deterministically(tmp_path):
    first = tmp_path / "first"
    Trainer(short_run(2), first, setup_world("cpu")).train()
    state = checkpoint.load(first / checkpoint.SHARED)
    state["learner"]["halt_generator"] = CUDA_GENERATOR_STATE
    checkpoint.save_atomic(state, first / checkpoint.SHARED)
    shutil.copytree(first, tmp_path / "second")
    runs = []
    for run_dir in (first, tmp_path / "second"):
        trainer = Trainer(short_run(4), run_dir, setup_world("cpu"))
        assert trainer.resume() and trainer.learner.step == 2
        trainer.train()
        runs.append((trainer.slots[10].halted.clone(), [p.detach().clone() for p in trainer.learner.model.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_a_float32_carry_resumes_in_the_runs_compute_dtype(tmp_path):
    Trainer(short_run(2), tmp_path, setup_world("cpu"), dtype=torch.float32).train()
    assert checkpoint.load(tmp_path / checkpoint.rank_file(0))["slots"][10]["carry_y"].dtype == torch.float32
    resumed = Trainer(short_run(3), tmp_path, setup_world("cpu"), dtype=torch.bfloat16)
    assert resumed.resume()
    carry = resumed.slots[10].carry
    assert carry.y.dtype == carry.z.dtype == torch.bfloat16
    resumed.train()
    assert resumed.learner.step == 3 and resumed.slots[10].carry.y.dtype == torch.bfloat16


# -- running out of GPU memory part-way through a step ------------------------------------------------


def _setup(micro_batch):
    """A tiny network on a 6x6 canvas whose samples halt at different steps, so slots refill."""
    config = tiny_model().replace(max_steps=3, halt_exploration=0.5, canvas=CANVAS)
    model = build_model(config, dtype=torch.float32, seed=3)
    with torch.no_grad():
        model.q_head.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(4))
        model.q_head.bias.fill_(20.0)
    optim = OptimConfig(global_batch=BATCH, lr=1e-3, lr_warmup_steps=1, micro_batch=micro_batch)
    catalogue = PuzzleCatalogue(synthetic_tasks(6, 0, max_side=CANVAS), [], 4, 0, canvas=CANVAS)
    learner = Learner(config, optim, catalogue.num_ids, CPU, torch.float32, seed=5, model=model)
    learner.puzzles.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(6))
    stream = TrainStream(catalogue, DataConfig(train_sources=(), held_out_sources=(), num_aug=4, canvas=CANVAS))
    return learner, Slots(learner.model, BATCH, CPU, CANVAS), stream


def _train(micro_batch, steps=3):
    """``steps`` pretraining steps; per step everything a step changes, and the puzzle lookups its
    sign-SGD update saw."""
    learner, slots, stream = _setup(micro_batch)
    lookups, puzzle_step = [], learner.puzzles.step

    def counting_puzzle_step(*args):
        lookups.append(sum(len(ids) for ids, _ in learner.puzzles._pending))
        return puzzle_step(*args)

    learner.puzzles.step = counting_puzzle_step
    history = []
    for _ in range(steps):
        metrics = train_step(learner, slots, stream, halve_on_oom=True)
        history.append({"metrics": metrics, "params": [p.detach().clone() for p in learner.model.parameters()],
                        "ema": [p.detach().clone() for p in learner.ema.parameters()],
                        "puzzles": learner.puzzles.weight.clone(), "halted": slots.halted.clone(),
                        "steps": slots.steps.clone(), "carry_y": slots.carry.y.clone(),
                        "carry_z": slots.carry.z.clone(), "lookups": lookups[-1],
                        "halt_generator": learner.halt_generator.get_state()})
    return history, learner


def _assert_identical(a, b):
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        for key in ("params", "ema"):
            assert all(torch.equal(p, q) for p, q in zip(x[key], y[key])), f"step {step}: {key}"
        for key in ("puzzles", "halted", "steps", "carry_y", "carry_z", "halt_generator"):
            assert torch.equal(x[key], y[key]), f"step {step}: {key}"
        assert x["lookups"] == y["lookups"], f"step {step}: puzzle lookups"
        assert x["metrics"].keys() == y["metrics"].keys()
        for name in x["metrics"]:
            assert torch.equal(x["metrics"][name], y["metrics"][name]), f"step {step}: metric {name}"


class OutOfMemoryAbove:
    """Wraps ``_micro_step``: raises out-of-memory on micro-batches larger than ``limit``; with
    ``after_first``, only after the step's first micro-batch has run (forward, backward, carry)."""

    def __init__(self, limit: int, after_first: bool = False):
        self.limit, self.after_first, self.raised = limit, after_first, 0
        self.micro_step = learner_module._micro_step

    def __call__(self, learner, slots, part):
        too_big = part.stop - part.start > self.limit
        if too_big and not (self.after_first and part.start == 0):
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory (forced by a test)")
        return self.micro_step(learner, slots, part)


def test_a_step_out_of_memory_part_way_runs_again_from_its_start_at_half_the_micro_batch(monkeypatch, capsys):
    """Micro-batch 4 of 8 slots: the first half runs, the second runs out of memory. The step runs
    again at micro-batch 2 from the carry, gradients and lookups it started with, so it is the step
    a run at micro-batch 2 takes, bit for bit; later steps start at 2."""
    reference, _ = _train(micro_batch=2)
    assert any(h["halted"].any() and not h["halted"].all() for h in reference)  # halting and refills happen
    capsys.readouterr()
    fake = OutOfMemoryAbove(2, after_first=True)
    monkeypatch.setattr(learner_module, "_micro_step", fake)
    halved, learner = _train(micro_batch=4)
    assert fake.raised == 1 and learner.micro_batch_size(CANVAS, BATCH) == 2
    assert capsys.readouterr().out.splitlines() == [
        "rank 0: out of GPU memory at micro-batch 4 on canvas 6; going on at 2"]
    _assert_identical(halved, reference)


def test_the_comparison_sees_a_half_updated_carry(monkeypatch):
    """Had each micro-batch written its carry as it ran, the retry would start from the first half's
    new carry: the check above would fail."""
    reference, _ = _train(micro_batch=2, steps=1)
    real_micro_step = learner_module._micro_step

    def writing_micro_step(learner, slots, part):
        loss, q_logits, terms, carry = real_micro_step(learner, slots, part)
        slots.carry.y[part], slots.carry.z[part] = carry.y, carry.z
        return loss, q_logits, terms, carry

    fake = OutOfMemoryAbove(2, after_first=True)
    fake.micro_step = writing_micro_step
    monkeypatch.setattr(learner_module, "_micro_step", fake)
    half_updated, _ = _train(micro_batch=4, steps=1)
    with pytest.raises(AssertionError, match="step 0"):
        _assert_identical(half_updated, reference)


def test_out_of_memory_at_micro_batch_1_gives_up_and_leaves_the_slots_alone(monkeypatch, capsys):
    learner, slots, stream = _setup(micro_batch=None)
    slots.refill(learner.model, stream)
    carry_y, steps = slots.carry.y.clone(), slots.steps.clone()
    monkeypatch.setattr(learner_module, "_micro_step", OutOfMemoryAbove(0))
    with pytest.raises(MemoryError, match="out of GPU memory at micro-batch 1 on canvas 6"):
        train_step(learner, slots, stream, halve_on_oom=True)
    assert [line.split(" micro-batch ")[1] for line in capsys.readouterr().out.splitlines()] == [
        "8 on canvas 6; going on at 4", "4 on canvas 6; going on at 2", "2 on canvas 6; going on at 1"]
    assert torch.equal(slots.carry.y, carry_y) and torch.equal(slots.steps, steps) and learner.step == 0
    assert all(p.grad is None for p in learner.model.parameters()) and not learner.puzzles._pending


def test_without_halving_out_of_memory_reaches_the_caller(monkeypatch):
    """Test-time fine-tuning handles it itself (a whole new attempt), so the default step lets it through."""
    learner, slots, stream = _setup(micro_batch=None)
    monkeypatch.setattr(learner_module, "_micro_step", OutOfMemoryAbove(0))
    with pytest.raises(torch.OutOfMemoryError):
        train_step(learner, slots, stream)
    assert learner.micro_batch_size(CANVAS, BATCH) == BATCH


def test_the_command_line_gives_up_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(learner_module, "_micro_step", OutOfMemoryAbove(0))
    code = main(["--preset", "tiny", "--global-batch", "4", "--steps", "1", "--device", "cpu", "--eval-every", "0",
                 "--train-sources", "synthetic:8/0", "--held-out-sources", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 1 and errors == [
        "error: out of GPU memory at micro-batch 1 on canvas 10 (local batch 4): not even one sample's step fits "
        "the device"]
    assert captured.out.count("going on at") == 2
