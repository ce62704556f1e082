"""Prediction under augmented views, and pass@K on held-out test inputs.

Used by pretraining's periodic evaluation and by the submission after test-time fine-tuning: every
test input is encoded under each augmented version of its task (at offset (0, 0), as the model saw
test inputs in training), run for all ``max_steps`` supervision steps, decoded, and handed to the
voting with its halting confidence and per-cell log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arc_data.encoding import decode_grids, encode_grid
from arc_data.tasks import Task
from augment.tables import AugmentationTable
from pretrain.losses import log_stablemax
from pretrain.model import RecursiveModel
from pretrain.puzzle_embedding import PuzzleEmbedding
from augment.voting import Prediction, hit_at_k, rank_candidates


@dataclass
class ViewBatch:
    """The test inputs of one task under several augmented versions, ready for the model."""

    inputs: np.ndarray       # (N, canvas * canvas) uint8
    puzzle_ids: np.ndarray   # (N,) int64
    test_index: list[int]    # which test input each row is
    version: list[int]       # which row of the augmentation table


def task_views(task: Task, table: AugmentationTable, first_id: int, num_views: int, *, canvas: int) -> ViewBatch:
    """Every test input under the first ``num_views`` augmented versions, where it fits the canvas."""
    rows, ids, tests, versions = [], [], [], []
    for version in range(min(num_views, len(table))):
        aug = table[version]
        for index, grid in enumerate(task.test_inputs):
            view = aug.apply(grid)
            if max(view.shape) > canvas:
                continue
            rows.append(encode_grid(view, canvas))
            ids.append(first_id + version)
            tests.append(index)
            versions.append(version)
    inputs = np.stack(rows) if rows else np.zeros((0, canvas * canvas), np.uint8)
    return ViewBatch(inputs, np.array(ids, dtype=np.int64), tests, versions)


@torch.no_grad()
def predict(model: RecursiveModel, puzzles: PuzzleEmbedding, inputs: np.ndarray, puzzle_ids: np.ndarray,
            batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Run all ``max_steps`` supervision steps; returns log-probabilities (N, S, V) float32 under the
    stablemax the model is trained with, and the final halting logits (N,).

    A compiled model sees every batch at ``batch_size`` rows (a short last batch is padded with
    copies of its first row and the padding dropped), so it compiles one graph per canvas."""
    model.eval()
    log_probs, q_halt = [], []
    for start in range(0, len(inputs), batch_size):
        tokens = torch.from_numpy(inputs[start:start + batch_size]).to(device)
        ids = torch.from_numpy(puzzle_ids[start:start + batch_size])
        count = len(tokens)
        if model.compiled and count < batch_size:
            tokens = torch.cat([tokens, tokens[:1].expand(batch_size - count, -1)])
            ids = torch.cat([ids, ids[:1].expand(batch_size - count)])
        emb = puzzles.lookup(ids.to(device))
        side = int(round(tokens.shape[1] ** 0.5))
        carry = model.initial_carry(len(tokens), device, side=side)
        for _ in range(model.config.max_steps):
            carry, logits, q_logits = model(carry, tokens, emb)
        log_probs.append(log_stablemax(logits[:count].double()).float().cpu().numpy())
        q_halt.append(q_logits[:count, 0].float().cpu().numpy())
    if not log_probs:
        return np.zeros((0, inputs.shape[1], model.config.vocab), np.float32), np.zeros(0, np.float32)
    return np.concatenate(log_probs), np.concatenate(q_halt)


def view_predictions(views: ViewBatch, table: AugmentationTable, log_probs: np.ndarray, q_halt: np.ndarray,
                     *, canvas: int, keep_log_probs: bool = True) -> list[Prediction]:
    """Decoded predictions, each with its view's augmentation, confidence and log-probabilities."""
    grids = decode_grids(log_probs.argmax(-1).astype(np.uint8), canvas)
    confidence = 1 / (1 + np.exp(-q_halt.astype(np.float64)))
    return [Prediction(test_index=t, augmentation=table[v], grid=g, confidence=float(c),
                       log_probs=lp if keep_log_probs else None, canvas=canvas)
            for t, v, g, c, lp in zip(views.test_index, views.version, grids, confidence, log_probs)]


def pass_at(ranked: list, truths: tuple[np.ndarray, ...], ks: tuple[int, ...]) -> dict[int, float]:
    """A task's share of test outputs whose truth is in the top k, for each k."""
    return {k: float(np.mean([hit_at_k(r, t, k) for r, t in zip(ranked, truths)])) for k in ks}


def pass_at_sums(model: RecursiveModel, puzzles: PuzzleEmbedding, groups: list, num_views: int,
                 canvas: int | None, batch_size: int, device: torch.device, selector: str = "vote",
                 ks: tuple[int, ...] = (1, 2, 10, 100)) -> tuple[list[float], int]:
    """Per-task pass@k summed over the groups that have test outputs, and how many there are.

    Sums so that ranks can each take a share of the groups and add up (see the trainer). The views
    of all groups on one canvas are predicted together, in full batches."""
    scored = [g for g in groups if g.task.has_solutions]
    by_canvas: dict[int, list] = {}
    for group in scored:
        by_canvas.setdefault(canvas or group.canvas, []).append(group)
    sums = [0.0] * len(ks)
    for side, members in by_canvas.items():
        views = [task_views(g.task, g.table, g.first_id, num_views, canvas=side) for g in members]
        inputs = np.concatenate([v.inputs for v in views])
        ids = np.concatenate([v.puzzle_ids for v in views])
        log_probs, q_halt = predict(model, puzzles, inputs, ids, batch_size, device)
        bounds = np.cumsum([0] + [len(v.inputs) for v in views])
        for group, view, a, b in zip(members, views, bounds[:-1], bounds[1:]):
            predictions = view_predictions(view, group.table, log_probs[a:b], q_halt[a:b], canvas=side,
                                           keep_log_probs=selector != "vote")
            ranked = rank_candidates(predictions, len(group.task.test_inputs), selector)
            scores = pass_at(ranked, group.task.test_outputs, ks)
            sums = [total + scores[k] for total, k in zip(sums, ks)]
    return sums, len(scored)
