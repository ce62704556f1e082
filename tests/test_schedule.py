"""Fine-tuning by the time share: when to stop, the learning rate of each step, the inference reserve."""

import dataclasses
import math

import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from submission.config import FinetuneConfig, cpu, fresh_model_config
from submission.finetune import Network, solve_task
from submission.schedule import FinetuneSchedule, inference_reserve


def schedule(start=0.0, deadline=100.0, tasks=1, **changes) -> FinetuneSchedule:
    config = FinetuneConfig(**{"steps": None, "warmup_steps": 4, "lr_schedule": "cosine", "lr_floor": 0.1, **changes})
    return FinetuneSchedule.for_config(config, tasks, start, deadline)


def test_fixed_steps_stop_at_the_count_and_do_not_depend_on_time():
    fixed = schedule(steps=10, tasks=2)
    assert [fixed.done(s, 0.0) for s in (0, 19, 20)] == [False, False, True]
    assert [fixed.lr_factor(s, 0.0) for s in range(20)] == [fixed.lr_factor(s, 99.0) for s in range(20)]


def test_warm_up_then_cosine_decay_to_the_floor():
    fixed = schedule(steps=100)
    factors = [fixed.lr_factor(s, 0.0) for s in range(100)]
    assert factors[:4] == pytest.approx([0.25 * (k + 1) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 100)))
                                         for k in range(4)])
    assert max(factors) == factors[3] and all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert factors[50] == pytest.approx(0.55) and factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_constant_schedule_is_the_warm_up_factor_of_pretraining():
    from pretrain.learner import OptimConfig
    constant = schedule(steps=50, lr_schedule="constant")
    optim = OptimConfig(lr_warmup_steps=4)
    warmup = [min(1.0, (s + 1) / optim.lr_warmup_steps) for s in range(50)]
    assert [constant.lr_factor(s, 0.0) for s in range(50)] == warmup


def test_by_time_the_schedule_spans_the_share_and_stops_before_the_deadline():
    timed = schedule(start=10.0, deadline=110.0)
    assert not timed.done(0, 109.0) and timed.done(0, 111.0)  # a first step runs while the deadline is ahead
    timed.step_took(30.0)  # the first step (one-off costs) does not count
    assert not timed.done(1, 109.9)
    timed.step_took(2.0)
    assert not timed.done(5, 107.9) and timed.done(5, 108.1)
    assert timed.lr_factor(10, 10.0) == pytest.approx(1.0)
    assert timed.lr_factor(10, 60.0) == pytest.approx(0.55)
    assert timed.lr_factor(10, 110.0) == pytest.approx(0.1)


def test_by_time_needs_a_finite_share_and_a_known_schedule():
    with pytest.raises(ValueError, match="finite share"):
        schedule(deadline=math.inf)
    with pytest.raises(ValueError, match="lr_schedule"):
        schedule(steps=3, lr_schedule="linear")


def test_the_inference_reserve_scales_with_the_views():
    assert inference_reserve(0.2, 5) == pytest.approx(5 * inference_reserve(0.2, 1)) and inference_reserve(0.2, 1) > 0.2


def test_the_inference_reserve_leaves_fine_tuning_half_the_time_at_least():
    assert inference_reserve(0.2, 1000, seconds_left=60) == pytest.approx(30)
    assert inference_reserve(0.2, 10, seconds_left=60) < 30


def test_the_inference_reserve_keeps_every_tasks_first_batch_beyond_the_cap():
    """60 tasks of a joint shard, 512 views each, a first batch of 128, at 0.01 s per view: with 100 s
    left the cap would keep 50 s, but every task's first batch (76.8 s, 115.2 s with the safety
    factor) must run, so fine-tuning gets nothing; with 1000 s left all the views fit."""
    first_batches, views = 60 * 128, 60 * 512
    assert inference_reserve(0.01, views, seconds_left=100, minimum_views=first_batches) == pytest.approx(115.2)
    assert inference_reserve(0.01, views, seconds_left=1000, minimum_views=first_batches) == pytest.approx(460.8)


def test_the_cpu_preset_spends_its_share_on_fine_tuning():
    """Time is the knob: a task given twice the seconds takes about twice the steps, and keeps only a
    small part of its share for inference."""
    torch.set_num_threads(1)
    network = Network.fresh_init(fresh_model_config())
    task = synthetic_tasks(1, seed=3, families=("flip_lr",))[0]
    solve_task(task, network, dataclasses.replace(cpu(), steps=1), torch.device("cpu"), 60.0)  # loads the kernels
    outcomes = [solve_task(task, network, cpu(), torch.device("cpu"), seconds) for seconds in (2.0, 4.0)]
    short, long = outcomes
    for seconds, outcome in zip((2.0, 4.0), outcomes):
        # inference keeps at most half the share (more of it only on a loaded machine's timings)
        assert 0.4 * seconds < outcome.finetune_seconds < seconds
        assert outcome.finetune_seconds + outcome.inference_seconds < seconds + 0.5
    assert long.finetune_steps > 1.3 * short.finetune_steps


def test_fixed_steps_give_the_same_answers_whatever_the_share():
    torch.set_num_threads(1)
    network = Network.fresh_init(fresh_model_config())
    task = synthetic_tasks(1, seed=3, families=("colour_map",))[0]
    config = dataclasses.replace(cpu(), steps=6)
    a = solve_task(task, network, config, torch.device("cpu"), 60.0)
    b = solve_task(task, network, config, torch.device("cpu"), math.inf)
    assert a.finetune_steps == b.finetune_steps == 6 and a.ranked == b.ranked


def test_a_fitted_task_cools_down_for_a_quarter_of_what_it_spent():
    fixed = schedule(steps=100)
    fixed.cool_down(40, 0.0)
    assert [fixed.done(s, 0.0) for s in (49, 50)] == [False, True]
    assert fixed.lr_factor(40, 0.0) < 0.2 and fixed.lr_factor(49, 0.0) == pytest.approx(0.1, abs=0.01)
    timed = schedule(start=10.0, deadline=110.0)
    timed.cool_down(7, 50.0)  # 40 s spent: 10 s more
    assert not timed.done(8, 59.9) and timed.done(8, 60.1)
    late = schedule(steps=100)
    late.cool_down(90, 0.0)  # never past the plan
    assert late.done(100, 0.0) and not late.done(99, 0.0)


def test_fine_tuning_stops_once_enough_steps_in_a_row_fit_every_sample(monkeypatch):
    """Steps 1-2 and 4-6 fit every sample; with ``stop_when_fitted=3`` the third fitted step in a row
    (step 6) starts the cool-down: a quarter of 6 steps more, rounded up, so 8 steps of the 100."""
    import submission.finetune as finetune
    torch.set_num_threads(1)
    fits = iter([True, True, False] + [True] * 100)
    real_step = finetune.train_step

    def step_with_chosen_fit(learner, slots, stream):
        metrics = real_step(learner, slots, stream)
        metrics["exact_accuracy"] = metrics["count"] * float(next(fits))
        return metrics

    monkeypatch.setattr(finetune, "train_step", step_with_chosen_fit)
    network = Network.fresh_init(fresh_model_config())
    task = synthetic_tasks(1, seed=3, families=("colour_map",))[0]
    config = dataclasses.replace(cpu(), steps=100, stop_when_fitted=3, views=2)
    assert solve_task(task, network, config, torch.device("cpu"), math.inf).finetune_steps == 8
    with pytest.raises(ValueError, match="stop_when_fitted"):
        dataclasses.replace(cpu(), stop_when_fitted=-1)
