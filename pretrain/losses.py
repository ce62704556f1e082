"""Losses for deep supervision with adaptive halting, as the official TRM/HRM code computes them: every
supervision step is trained on its own (stablemax cross-entropy of its answer, plus 0.5 x a BCE that
teaches the halting head whether that answer is exactly right).

- ``stablemax_cross_entropy``: per-sequence mean of the stablemax cross-entropy over non-PAD labels,
  computed in float64.
- ``act_loss``: the loss of one supervision step for a batch, divided by the global batch size, and
  detached metric sums; ``act_loss_terms`` and ``act_metrics`` are its two halves, for micro-batches
  (the loss does not depend on the halting decision, only the metrics do).
- ``q_continue_target``: HRM's Q-learning target for the continue logit.
- ``improvement_targets``: Deep Improvement Supervision's target for each supervision step (an option,
  ``OptimConfig.improvement_targets``; the official recipe trains every step on the answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from arc_data.encoding import PAD


def stablemax(x: Tensor) -> Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (positive, monotone, linear growth)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))


def log_stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    """log(s(x_i) / sum_j s(x_j)) in float64."""
    s = stablemax(logits.double())
    return torch.log(s) - torch.log(s.sum(dim=dim, keepdim=True))


def stablemax_token_loss(logits: Tensor, labels: Tensor, ignore_index: int = PAD) -> Tensor:
    """Per-token stablemax cross-entropy in float64: (B, S, V), (B, S) -> (B, S); 0 where ignored."""
    valid = labels != ignore_index
    logp = log_stablemax(logits)
    picked = logp.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, torch.zeros_like(picked))


def stablemax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = PAD) -> Tensor:
    """Per-sequence mean over non-ignored labels, float64: (B, S, V), (B, S) -> (B,).

    A sequence with no valid label contributes 0.
    """
    counts = (labels != ignore_index).sum(-1).clamp_min(1)
    return stablemax_token_loss(logits, labels, ignore_index).sum(-1) / counts


def q_continue_target(next_q_logits: Tensor, is_last_step: Tensor) -> Tensor:
    """HRM's target for q_continue, from a no-grad forward pass from the *next* state on the same batch.

    next_q_logits (B, 2) are (halt, continue) of that pass; is_last_step (B,) bool marks slots whose
    step just taken was their last allowed one (continuing is impossible, so only halting counts):
        target = sigmoid(next_halt)                        if is_last_step
                 sigmoid(max(next_halt, next_continue))    otherwise
    Returned detached, in fp32.
    """
    nh, nc = next_q_logits[:, 0].float(), next_q_logits[:, 1].float()
    return torch.sigmoid(torch.where(is_last_step, nh, torch.maximum(nh, nc))).detach()


def improvement_targets(inputs: Tensor, labels: Tensor, reveal: Tensor, step: Tensor, max_steps: int) -> Tensor:
    """Deep Improvement Supervision (arXiv 2511.16886): the target of supervision step ``step`` of
    ``max_steps`` moves from the input towards the answer, one share of the changed cells per step.

    A cell of the answer takes the answer's token once its draw in ``reveal`` (uniform in [0, 1), fixed
    per sample) is below step / max_steps, and keeps the input's token before that; cells where input
    and answer agree, and cells outside the answer (PAD, ignored), are the answer's at every step. So
    each step's target holds every cell the previous one had turned, and the last step's is the answer.
    An unturned cell outside the input grid has the input's PAD there: ignored until it turns.

    inputs, labels (B, S) tokens, reveal (B, S) float, step (B,) int in 1..max_steps -> (B, S) long.
    """
    turned = reveal < step.float().unsqueeze(-1) / max_steps
    return torch.where(turned | (labels == PAD), labels, inputs).long()


@dataclass
class StepTerms:
    """What a supervision step's metrics need, detached: per-sample values (B,) and loss sums.

    Kept apart from the halting decision so micro-batches can be measured one by one and the
    metrics formed once the whole batch's halting is known (``StepTerms.cat``, ``act_metrics``).
    """

    exact: Tensor  # (B,) bool: every non-PAD label predicted by argmax
    token_fraction: Tensor  # (B,) share of non-PAD labels predicted right
    has_labels: Tensor  # (B,) bool: at least one non-PAD label
    q_halt: Tensor  # (B,) fp32 halting logit
    lm_loss: Tensor  # () sum over the batch of the per-sequence stablemax CE
    q_halt_loss: Tensor  # () sum of BCE(q_halt, exact)
    q_continue_loss: Tensor  # () sum of BCE(q_continue, target); 0 without a target

    @staticmethod
    def cat(parts: list["StepTerms"]) -> "StepTerms":
        """The terms of a batch from those of its micro-batches, in order."""
        if len(parts) == 1:
            return parts[0]
        per_sample = {name: torch.cat([getattr(p, name) for p in parts])
                      for name in ("exact", "token_fraction", "has_labels", "q_halt")}
        sums = {name: torch.stack([getattr(p, name) for p in parts]).sum()
                for name in ("lm_loss", "q_halt_loss", "q_continue_loss")}
        return StepTerms(**per_sample, **sums)


def act_loss_terms(logits: Tensor, labels: Tensor, q_logits: Tensor, global_batch_size: int,
                   target_q_continue: Tensor | None = None,
                   ignore_index: int = PAD) -> tuple[Tensor, StepTerms]:
    """The loss of ``act_loss`` (it does not depend on halting) and the detached terms of its metrics."""
    mask = labels != ignore_index
    counts = mask.sum(-1)
    correct = mask & (logits.argmax(-1) == labels)
    exact = correct.sum(-1) == counts  # (B,)

    lm = stablemax_cross_entropy(logits, labels, ignore_index).sum()
    q_halt = q_logits[:, 0].float()
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, exact.float(), reduction="sum")
    q_continue_loss = torch.zeros((), device=logits.device)
    if target_q_continue is not None:
        q_continue_loss = F.binary_cross_entropy_with_logits(q_logits[:, 1].float(), target_q_continue.float(),
                                                             reduction="sum")
    loss = ((lm + 0.5 * (q_halt_loss + q_continue_loss)) / global_batch_size).float()
    with torch.no_grad():
        terms = StepTerms(exact=exact, token_fraction=correct.sum(-1).float() / counts.clamp_min(1).float(),
                          has_labels=counts > 0, q_halt=q_halt.detach(), lm_loss=lm.detach().float(),
                          q_halt_loss=q_halt_loss.detach(), q_continue_loss=q_continue_loss.detach())
    return loss, terms


@torch.no_grad()
def act_metrics(terms: StepTerms, halted: Tensor, steps: Tensor) -> dict[str, Tensor]:
    """Metric sums of ``act_loss`` from a batch's terms, its halting decision and step counts."""
    valid = halted & terms.has_labels
    return {
        "count": valid.sum().float(),
        "exact_accuracy": (valid & terms.exact).sum().float(),
        "token_accuracy": torch.where(valid, terms.token_fraction, 0.0).sum(),
        "q_halt_accuracy": (valid & ((terms.q_halt >= 0) == terms.exact)).sum().float(),
        "steps": torch.where(valid, steps.float(), 0.0).sum(),
        "lm_loss": terms.lm_loss,
        "q_halt_loss": terms.q_halt_loss,
        "q_continue_loss": terms.q_continue_loss,
    }


def act_loss(logits: Tensor, labels: Tensor, q_logits: Tensor, halted: Tensor, steps: Tensor,
             global_batch_size: int, *, target_q_continue: Tensor | None = None,
             ignore_index: int = PAD) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one supervision step and metric sums.

    logits (B, S, V), labels (B, S), q_logits (B, 2) (halt, continue), halted (B,) bool (slots that
    halted after this step), steps (B,) int (steps taken including this one), global_batch_size:
    the batch size summed over all ranks. target_q_continue (B,): HRM only, from ``q_continue_target``.

        loss = [ sum_b lm_b + 0.5 * (sum_b BCE(q_halt_b, exact_b) + sum_b BCE(q_cont_b, target_b)) ] / global_batch_size

    where lm_b is the per-sequence stablemax CE mean and exact_b says every non-PAD label of b is
    predicted by argmax. Every slot contributes to the loss, halted or not.

    Metrics are detached sums over the slots that halted and have at least one label, so they can be
    all-reduced and divided by ``count`` (see ``summarize_metrics``): ``count``, ``exact_accuracy``,
    ``token_accuracy`` (per-sequence fraction, summed), ``q_halt_accuracy`` (q_halt >= 0 agrees with
    exactness), ``steps``; plus the loss parts summed over the whole batch: ``lm_loss``,
    ``q_halt_loss``, ``q_continue_loss`` (0 without a target).
    """
    loss, terms = act_loss_terms(logits, labels, q_logits, global_batch_size, target_q_continue, ignore_index)
    return loss, act_metrics(terms, halted, steps)


def summarize_metrics(sums: dict[str, Tensor], batch_size: int | None = None) -> dict[str, float]:
    """Means from (possibly all-reduced) sums: halted-slot metrics over ``count``; loss parts over batch_size."""
    count = max(float(sums["count"]), 1.0)
    out = {"count": float(sums["count"])}
    for k in ("exact_accuracy", "token_accuracy", "q_halt_accuracy", "steps"):
        out[k] = float(sums[k]) / count
    for k in ("lm_loss", "q_halt_loss", "q_continue_loss"):
        out[k] = float(sums[k]) / batch_size if batch_size else float(sums[k])
    return out
