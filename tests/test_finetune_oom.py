"""Running out of GPU memory, forced on the CPU: the training step or the prediction raises
``torch.cuda.OutOfMemoryError``. Only the phase that failed runs again (fine-tuning at half its
micro-batch, the batch kept; prediction at half its batch), within the time left of the task's one
deadline, after the failed attempt's tensors are freed."""

import dataclasses
import sys
import time
import weakref

import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from submission import finetune
from submission.config import cpu, fresh_model_config
from submission.finetune import Network, solve_task

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def task():
    return synthetic_tasks(1, seed=4)[0]


@pytest.fixture
def network():
    return Network.fresh_init(fresh_model_config())


def tiny_config(**changes):
    tiny = dict(num_aug=4, views=4, steps=6, embedding_steps=1, batch=8, inference_batch=8)
    return dataclasses.replace(cpu(), **{**tiny, **changes})


def oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory (forced by a test)")


class Counting:
    """Wraps a function: counts its calls and raises out-of-memory on the calls listed."""

    def __init__(self, function, oom_on=(), before_oom=lambda *args: None):
        self.function, self.oom_on, self.before_oom, self.calls = function, set(oom_on), before_oom, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls in self.oom_on or "all" in self.oom_on:
            self.before_oom(*args)
            raise oom()
        return self.function(*args, **kwargs)


def test_out_of_memory_in_fine_tuning_retries_it_in_the_time_left(task, network, monkeypatch):
    """The first attempt spends most of fine-tuning's share, then runs out of memory; the retry at
    half the batch only gets what is left, so the task still ends within its time."""
    solve_task(task, network, tiny_config(steps=1), CPU, float("inf"))  # first-call costs (compiling) out of the way
    seconds = 4.0
    first_model = []

    def spend_time_first(learner, *args):
        first_model.append(weakref.ref(learner.model))
        time.sleep(2.5)

    def train_step(learner, *args):
        assert first_model[0]() is None, "the failed attempt's network was not freed before the retry"
        return real_train_step(learner, *args)

    real_train_step = finetune.train_step
    training = Counting(train_step, oom_on={1}, before_oom=spend_time_first)
    monkeypatch.setattr(finetune, "train_step", training)
    config = tiny_config(steps=10**6)  # fine-tuning ends on time, not on a step count
    started = time.perf_counter()
    outcome = solve_task(task, network, config, CPU, seconds)
    assert time.perf_counter() - started < seconds + 1.0
    assert not outcome.failed and outcome.note == "ok"
    assert outcome.batch == config.batch and outcome.micro_batch == config.batch // 2
    assert outcome.inference_batch == config.inference_batch
    assert outcome.finetune_steps == training.calls - 1 >= 1 and outcome.views > 0


def test_out_of_memory_in_prediction_keeps_the_fine_tuning(task, network, monkeypatch):
    training = Counting(finetune.train_step)
    prediction = Counting(finetune.predict, oom_on={1})
    monkeypatch.setattr(finetune, "train_step", training)
    monkeypatch.setattr(finetune, "predict", prediction)
    config = tiny_config()
    outcome = solve_task(task, network, config, CPU, float("inf"))
    assert training.calls == config.steps == outcome.finetune_steps  # fine-tuned once, not again
    assert prediction.calls == 2 and outcome.inference_batch == config.inference_batch // 2
    assert outcome.batch == outcome.micro_batch == config.batch
    assert not outcome.failed and outcome.views == config.views and outcome.ranked[0]


@pytest.mark.parametrize("phase", ["train_step", "predict"])
def test_out_of_memory_at_every_batch_fails_the_task(task, network, monkeypatch, phase):
    calls = {name: Counting(getattr(finetune, name), oom_on={"all"} if name == phase else ())
             for name in ("train_step", "predict")}
    for name, wrapped in calls.items():
        monkeypatch.setattr(finetune, name, wrapped)
    config = tiny_config()
    outcome = solve_task(task, network, config, CPU, float("inf"))
    assert outcome.failed and outcome.ranked == [[]]
    assert calls[phase].calls == finetune.OOM_ATTEMPTS
    if phase == "predict":
        assert calls["train_step"].calls == config.steps
        assert outcome.note == f"out of GPU memory in prediction, down to batch {config.inference_batch // 4}"
    else:
        assert calls["predict"].calls == 0
        assert outcome.note == f"out of GPU memory in fine-tuning, down to micro-batch {config.batch // 4}"


def test_memory_is_freed_outside_the_except(task, network, monkeypatch):
    """Inside ``except`` the traceback still holds the failed attempt's tensors."""
    active_errors = []
    real_free = finetune.free_memory

    def free_memory(device):
        active_errors.append(sys.exc_info()[0])
        real_free(device)

    monkeypatch.setattr(finetune, "free_memory", free_memory)
    monkeypatch.setattr(finetune, "predict", Counting(finetune.predict, oom_on={1}))
    monkeypatch.setattr(finetune, "train_step", Counting(finetune.train_step, oom_on={1}))
    outcome = solve_task(task, network, tiny_config(), CPU, float("inf"))
    assert not outcome.failed
    assert active_errors == [None, None]


def test_halved_micro_batch_keeps_the_optimizer_batch(task, network, monkeypatch):
    """After running out of memory the retry accumulates two half micro-batches: every optimizer
    step still sees the recipe's batch of slots."""
    seen = []

    def record(learner, slots, *args):
        seen.append((slots.local_batch, learner.micro_batch_size(slots.side, slots.local_batch)))

    def train_step(learner, slots, *args):
        record(learner, slots)
        return real_train_step(learner, slots, *args)

    real_train_step = finetune.train_step
    monkeypatch.setattr(finetune, "train_step", Counting(train_step, oom_on={1}, before_oom=record))
    config = tiny_config(micro_batch=8)
    outcome = solve_task(task, network, config, CPU, float("inf"))
    assert seen[0] == (8, 8) and set(seen[1:]) == {(8, 4)}
    assert outcome.batch == 8 and outcome.micro_batch == 4 and not outcome.failed


def test_auto_micro_batch_is_the_whole_batch_on_a_cpu(task, network):
    outcome = solve_task(task, network, tiny_config(), CPU, float("inf"))
    assert tiny_config().micro_batch == "auto" and outcome.micro_batch == outcome.batch == 8
