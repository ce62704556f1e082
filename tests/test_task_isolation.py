"""One task never takes the others down: a task that cannot take part fails alone with its reason,
an error in joint fine-tuning still predicts every task, an error in one prediction fails that task,
a short share still predicts each task of a joint shard, and compiling is not charged to tasks."""

import dataclasses
import time

import numpy as np
import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from arc_data.tasks import Task
from pretrain.model import RecursiveModel
from submission import finetune
from submission.config import cpu, fresh_model_config
from submission.finetune import Network, solve_shard, solve_task

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_worker_memo():
    """Each test starts as a new worker would: nothing compiled, nothing measured."""
    finetune.forget_measurements()
    yield
    finetune.forget_measurements()


@pytest.fixture(scope="module")
def network():
    return Network.fresh_init(fresh_model_config())


def tiny_config(**changes):
    tiny = dict(num_aug=4, views=4, steps=3, embedding_steps=0, batch=4, inference_batch=8)
    return dataclasses.replace(cpu(), **{**tiny, **changes})


def with_grid(task: Task, side: int, where: str) -> Task:
    """The task with one grid replaced by a side x side one: a test input, or a demonstration's output."""
    big = np.ones((side, side), np.uint8)
    if where == "test input":
        return dataclasses.replace(task, id=f"{task.id}-big-test", test_inputs=(big,) + task.test_inputs[1:])
    train = ((task.train[0][0], big),) + task.train[1:]
    return dataclasses.replace(task, id=f"{task.id}-big-demo", train=train)


def solve(tasks, network, config, seconds=60.0):
    reported, lines = [], []
    outcomes = solve_shard(tasks, network, config, CPU, seconds, report=reported.append, log=lines.append)
    return outcomes, reported, lines


@pytest.mark.parametrize("where, name", [("test input", "test input 1"), ("demo", "demonstration 1's output")])
def test_a_task_larger_than_the_canvas_fails_alone_in_a_joint_shard(network, where, name):
    small = synthetic_tasks(2, seed=21)
    big = with_grid(synthetic_tasks(1, seed=22)[0], network.config.canvas + 3, where)
    outcomes, reported, _ = solve([small[0], big, small[1]], network, tiny_config())
    side = network.config.canvas + 3
    canvas = network.config.canvas
    assert outcomes[1].failed
    assert outcomes[1].note == f"{name} is {side}x{side}, larger than the network's {canvas}x{canvas} canvas"
    for outcome in (outcomes[0], outcomes[2]):
        assert not outcome.failed and outcome.views > 0 and outcome.finetune_steps == 3 * 2
    assert [o.task_id for o in reported] == [big.id, small[0].id, small[1].id]  # the failure first, at once


def test_a_task_whose_data_fail_to_encode_fails_alone(network, monkeypatch):
    tasks = synthetic_tasks(3, seed=23)
    doomed = tasks[1].id
    real = finetune.PuzzleCatalogue

    def refusing(train, held_out, *args, **kwargs):
        if any(t.id == doomed for t in held_out):
            raise ValueError("a grid the kernels cannot encode")
        return real(train, held_out, *args, **kwargs)

    monkeypatch.setattr(finetune, "PuzzleCatalogue", refusing)
    outcomes, _, _ = solve(tasks, network, tiny_config())
    assert outcomes[1].failed and outcomes[1].note == "its data failed to encode (ValueError: a grid the kernels cannot encode)"
    assert not outcomes[0].failed and not outcomes[2].failed


def test_an_error_in_joint_fine_tuning_still_predicts_every_task(network, monkeypatch):
    tasks = synthetic_tasks(3, seed=24)

    def broken_step(*args, **kwargs):
        raise RuntimeError("a shape bug in the training step")

    monkeypatch.setattr(finetune, "train_step", broken_step)
    outcomes, _, lines = solve(tasks, network, tiny_config())
    note = "fine-tuning failed (RuntimeError: a shape bug in the training step), predicted from the network as it was"
    for outcome in outcomes:
        assert not outcome.failed and outcome.views > 0 and outcome.finetune_steps == 0
        assert outcome.note == note
    assert lines == [f"{', '.join(t.id for t in tasks)}: {note}"]


def test_an_error_in_one_prediction_fails_that_task_only(network, monkeypatch):
    tasks = synthetic_tasks(3, seed=25)
    doomed = tasks[0].id
    real = finetune._predict_task

    def predict_or_raise(task, *args, **options):
        if task.id == doomed:
            raise IndexError("a decoding bug")
        return real(task, *args, **options)

    monkeypatch.setattr(finetune, "_predict_task", predict_or_raise)
    outcomes, reported, _ = solve(tasks, network, tiny_config())
    assert outcomes[0].failed and outcomes[0].note == "prediction failed (IndexError: a decoding bug)"
    assert not outcomes[1].failed and not outcomes[2].failed
    assert len(reported) == 3


def test_a_short_share_still_predicts_every_task_of_a_joint_shard(network):
    """NVARC-style fixed steps (far more than fit in 3 s): fine-tuning stops early enough for every
    task of the shard to be predicted, within the share."""
    tasks = synthetic_tasks(3, seed=26)
    config = tiny_config(steps=375, views=32, num_aug=32, inference_batch=32)
    solve_task(tasks[0], network, tiny_config(steps=1), CPU, 60.0)  # loads the kernels outside the timing
    start = time.perf_counter()
    outcomes, _, _ = solve(tasks, network, config, seconds=3.0)
    assert time.perf_counter() - start < 3.0 + 1.0
    for outcome in outcomes:
        assert not outcome.failed and outcome.views > 0
        assert 0 < outcome.finetune_steps < 375 * 3


class SlowFirstCall:
    """Stands in for torch.compile: the first call at each input shape sleeps (compiling), later
    calls run the eager step."""

    def __init__(self, seconds: float, error: Exception | None = None):
        self.seconds, self.error, self.shapes = seconds, error, set()

    def __call__(self, model, y, *args):
        key = (tuple(y.shape), torch.is_grad_enabled(), model.training)
        if key not in self.shapes:
            if self.error is not None:
                raise self.error
            self.shapes.add(key)
            time.sleep(self.seconds)
        return type(model).supervision_step(model, y, *args)


def fake_compile(monkeypatch, compiled: SlowFirstCall) -> None:
    monkeypatch.setattr(RecursiveModel, "compile_step", lambda model, *a, **k: setattr(model, "_compiled_step", compiled))


def test_a_slow_first_call_is_warmed_up_off_the_tasks_clock(network, monkeypatch):
    """A 'compile' of 1.5 s per shape, on a 3 s share by time: the warm-up is reported apart, the
    share still goes to fine-tuning (as much as without a compile), and a second task on the same
    worker pays nothing."""
    fake_compile(monkeypatch, SlowFirstCall(1.5))
    task = synthetic_tasks(1, seed=27)[0]
    config = tiny_config(steps=None, compile=True)
    first = solve_task(task, network, config, CPU, 3.0)
    second = solve_task(task, network, config, CPU, 3.0)
    assert first.warmup_seconds >= 2 * 1.5  # the training step's shape and the prediction batch's
    assert second.warmup_seconds == 0.0
    for outcome in (first, second):
        assert not outcome.failed and 0.4 * 3.0 < outcome.finetune_seconds < 3.0
        assert outcome.finetune_seconds + outcome.inference_seconds < 3.0 + 0.5


def test_a_compile_that_fails_goes_on_eagerly_with_one_line(network, monkeypatch):
    fake_compile(monkeypatch, SlowFirstCall(0.0, error=RuntimeError("inductor: a Triton kernel failed to build")))
    tasks = synthetic_tasks(2, seed=28)
    config = tiny_config(compile=True)
    outcomes, _, lines = solve(tasks[:1], network, config)
    assert not outcomes[0].failed and outcomes[0].finetune_steps == 3
    assert lines == ["compiling failed (RuntimeError: inductor: a Triton kernel failed to build): "
                     "this worker goes on without compiling"]
    assert not finetune.compiles(config, CPU)  # the rest of this worker's tasks run eagerly
    outcomes, _, lines = solve(tasks[1:], network, config)
    assert not outcomes[0].failed and lines == []
