"""How long a task fine-tunes and at what learning rate: the time share is the knob.

    schedule = FinetuneSchedule(config, tasks=1, start=now, deadline=finetune_deadline)
    while not schedule.done(step, now):
        learner.lr_factor = schedule.lr_factor(step, now)
        ...one train_step...
        schedule.step_took(seconds)

Two modes. With ``config.steps`` set, a task runs exactly that many steps (times the tasks of a
shard; fewer only if the deadline comes first) and the learning rate follows the step count, so a
run is reproducible whatever the machine's speed. With ``config.steps`` None, it runs as many steps
as fit before the deadline, and the learning rate follows the fraction of the time share spent: the
warm-up, then the decay, stretch over whatever share the task was given.

A task that has fitted its demonstrations (``config.stop_when_fitted``) need not use its whole share:
``cool_down`` ends fine-tuning after a further FIT_COOL_DOWN of the steps or seconds spent so far,
over which the cosine runs to its floor, and the run hands the time saved to the tasks still to come.

The share left for inference is what inference needs: the seconds per view, measured at the real
inference batch on the task's canvas, times the views to predict, with a safety factor, and never
more than half the time left, except that every task keeps the time of its first batch: a task
that is fine-tuned is also predicted, from fewer steps when time is short. The first step (which
pays one-off costs) is left out of the step time ``done`` budgets with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from submission.config import FinetuneConfig

# Inference reserve = measured seconds per view x views x this (decoding and ranking are not in the
# measurement; a shared machine also slows down at times).
INFERENCE_SAFETY = 1.5
# Inference never keeps more than this share of the time left: where predicting every view would
# take longer, fewer views are predicted (inference stops at the deadline) rather than the network
# going without fine-tuning.
MAX_INFERENCE_SHARE = 0.5
LR_SCHEDULES = ("constant", "cosine")
# A fitted task fine-tunes on for this share of the steps (or seconds) it has taken so far: the
# learning rate falls to its floor instead of stopping where the fit happened to be reached.
FIT_COOL_DOWN = 0.25


@dataclass
class FinetuneSchedule:
    fixed_steps: int | None  # None: as many steps as fit before the deadline
    warmup_steps: int  # linear warm-up over the first steps
    decay: str  # "constant" (after warm-up) or "cosine" (down to floor x lr at the end of the share)
    floor: float  # the cosine's final factor
    start: float  # time.perf_counter() at the start of fine-tuning
    deadline: float  # when the last step must have finished
    seconds_per_step: float = 0.0  # the latest step's duration, the first step's left out
    steps_timed: int = 0

    @classmethod
    def for_config(cls, config: FinetuneConfig, tasks: int, start: float, deadline: float) -> "FinetuneSchedule":
        if config.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {config.lr_schedule!r}")
        fixed = config.steps * tasks if config.steps is not None else None
        if fixed is None and not math.isfinite(deadline):
            raise ValueError("fine-tuning by the time share needs a finite share; give a number of steps")
        return cls(fixed, config.warmup_steps, config.lr_schedule, config.lr_floor, start, deadline)

    def progress(self, step: int, now: float) -> float:
        """How far through fine-tuning ``step`` is, 0 to 1: by steps when fixed, else by time."""
        if self.fixed_steps is not None:
            return min(1.0, step / max(1, self.fixed_steps))
        if not math.isfinite(self.deadline):
            return 0.0
        return min(1.0, max(0.0, (now - self.start) / max(1e-9, self.deadline - self.start)))

    def lr_factor(self, step: int, now: float) -> float:
        """The learning-rate factor of the next step (network and puzzle rows alike)."""
        warm = min(1.0, (step + 1) / max(1, self.warmup_steps))
        if self.decay == "constant":
            return warm
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress(step, now)))
        return warm * (self.floor + (1 - self.floor) * cosine)

    def step_took(self, seconds: float) -> None:
        self.steps_timed += 1
        if self.steps_timed > 1:  # the first step also pays one-off costs (allocations, a late compile)
            self.seconds_per_step = seconds

    def cool_down(self, step: int, now: float) -> None:
        """The task has fitted its demonstrations at ``step``: end after FIT_COOL_DOWN more of what has
        been spent (never later than planned). The progress jumps, so the cosine falls at once."""
        if self.fixed_steps is not None:
            self.fixed_steps = min(self.fixed_steps, step + math.ceil(FIT_COOL_DOWN * step))
        else:
            self.deadline = min(self.deadline, now + FIT_COOL_DOWN * (now - self.start))

    def done(self, step: int, now: float) -> bool:
        """Whether to stop before ``step``: the fixed count is reached, or the next step would end past
        the deadline (the first step, of unknown length, runs if the deadline is still ahead)."""
        if self.fixed_steps is not None and step >= self.fixed_steps:
            return True
        return now + self.seconds_per_step > self.deadline


def inference_reserve(seconds_per_view: float, views: int, seconds_left: float = math.inf,
                      minimum_views: int = 0) -> float:
    """Seconds to keep back for predicting ``views`` augmented views (test inputs x views per input),
    at most ``MAX_INFERENCE_SHARE`` of ``seconds_left``, but never less than ``minimum_views`` need
    (every task's first batch, which always runs)."""
    wanted = min(INFERENCE_SAFETY * seconds_per_view * views, MAX_INFERENCE_SHARE * seconds_left)
    return max(wanted, INFERENCE_SAFETY * seconds_per_view * minimum_views)
