"""Choosing the attempts for one task from many augmented predictions; no model in sight.

Every test input is predicted under many augmented views. Each prediction is a grid in its view's
frame; a selector maps them back to the original frame, groups identical grids into candidates and
ranks the candidates, best first. The first two ranked candidates become ``attempt_1`` and
``attempt_2``; the rest still count for the pass@K oracle (``hit_at_k``, ``best_rank``).

Selectors (``SELECTORS``):

- ``vote``: the reference TRM rule, candidates ranked by how many views predicted them.
- ``poe``: a product of experts, candidates ranked by the mean log-probability the views assign
  to them, read from logits the model already computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from arc_data.encoding import CANVAS, PAD, VOCAB_SIZE, encode_grid
from augment.augmentation import Augmentation


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare grids explicitly
class Prediction:
    """One view's answer for one test input."""

    test_index: int  # which test input of the task (0-based)
    augmentation: Augmentation  # the view it was made under
    grid: np.ndarray  # decoded prediction, uint8, in the view's frame
    confidence: float | None = None  # sigmoid of the halting logit, when the model gave one
    # (canvas*canvas, VOCAB_SIZE) per-cell log-probabilities in the view's frame, grid at offset (0, 0)
    log_probs: np.ndarray | None = None
    canvas: int = CANVAS  # side of the canvas the view was encoded on

    def __post_init__(self):
        if self.grid.ndim != 2 or 0 in self.grid.shape:
            raise ValueError(f"prediction grid has shape {self.grid.shape}, not a non-empty 2-D grid")
        expected = (self.canvas * self.canvas, VOCAB_SIZE)
        if self.log_probs is not None and self.log_probs.shape != expected:
            raise ValueError(f"log_probs has shape {self.log_probs.shape}, expected {expected}")


@dataclass(frozen=True, eq=False)
class Candidate:
    """A distinct grid in the original frame and the evidence for it."""

    grid: np.ndarray  # original frame, read-only
    votes: int  # how many predictions map back to this grid
    mean_confidence: float | None  # mean over the votes that carry a confidence; None when none does
    score: float  # what the selector ranked by (higher is better)
    key: bytes = field(repr=False)  # shape and cells: equal grids, equal keys


Selector = Callable[[Sequence[Prediction]], list[Candidate]]


def grid_key(grid: np.ndarray) -> bytes:
    """Bytes that identify a grid: its shape, then its cells (so 2x3 and 3x2 grids never collide)."""
    rows, cols = grid.shape
    return bytes((rows, cols)) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


@dataclass
class _Group:
    """Predictions that map back to the same grid, in order of first appearance."""

    grid: np.ndarray
    key: bytes
    first_seen: int
    members: list[Prediction]

    @property
    def mean_confidence(self) -> float | None:
        known = [p.confidence for p in self.members if p.confidence is not None]
        return float(np.mean(known)) if known else None


def _group(predictions: Sequence[Prediction]) -> list[_Group]:
    groups: dict[bytes, _Group] = {}
    for position, prediction in enumerate(predictions):
        original = prediction.augmentation.invert(prediction.grid)
        key = grid_key(original)
        if key not in groups:
            frozen = np.array(original, dtype=np.uint8)  # own copy, so no caller can change it
            frozen.setflags(write=False)
            groups[key] = _Group(frozen, key, position, [])
        groups[key].members.append(prediction)
    return list(groups.values())


@dataclass
class Evidence:
    """One distinct candidate of a test input and everything a selector may rank it by."""

    grid: np.ndarray  # original frame, read-only
    key: bytes
    first_seen: int  # position of its first prediction (views in order, the identity first)
    votes: int  # how many predictions map back to it
    confidences: list[float]  # sigmoid of the halting logit of each of its votes that carries one
    view_log_probs: list[float | None]  # the log-probability each scoring view gives it (None: cannot say)

    @property
    def mean_confidence(self) -> float | None:
        return float(np.mean(self.confidences)) if self.confidences else None

    @property
    def mean_log_prob(self) -> float:
        """The product-of-experts score: the mean log-probability over the views that can express it."""
        known = [v for v in self.view_log_probs if v is not None]
        return float(np.mean(known)) if known else -np.inf

    def to_dict(self) -> dict:
        return {"grid": self.grid.tolist(), "first_seen": self.first_seen, "votes": self.votes,
                "confidences": self.confidences, "view_log_probs": self.view_log_probs}

    @classmethod
    def from_dict(cls, d: dict) -> "Evidence":
        grid = np.array(d["grid"], dtype=np.uint8)
        grid.setflags(write=False)
        return cls(grid, grid_key(grid), d["first_seen"], d["votes"], list(d["confidences"]), list(d["view_log_probs"]))


def gather_evidence(predictions: Sequence[Prediction]) -> list[Evidence]:
    """The distinct mapped-back predictions of one test input, in order of first appearance, each
    with its votes' confidences and, from every view that kept log-probabilities, its log-probability."""
    scorers = [p for p in predictions if p.log_probs is not None]
    evidence = []
    for group in _group(predictions):
        confidences = [p.confidence for p in group.members if p.confidence is not None]
        view_log_probs = [candidate_log_prob(group.grid, view) for view in scorers]
        evidence.append(Evidence(group.grid, group.key, group.first_seen, len(group.members), confidences,
                                 view_log_probs))
    return evidence


# Rank keys (higher is better) over one candidate's evidence. Every key ends with the first
# appearance, so a ranking never depends on hash or sort instability.
def _vote_key(e: Evidence) -> tuple:
    confidence = e.mean_confidence
    return e.votes, confidence if confidence is not None else -np.inf, -e.first_seen


def _poe_key(e: Evidence) -> tuple:
    return e.mean_log_prob, e.votes, -e.first_seen


def _confidence_key(e: Evidence) -> tuple:
    confidence = e.mean_confidence
    return confidence if confidence is not None else -np.inf, e.votes, -e.first_seen


def _weighted_vote_key(e: Evidence) -> tuple:
    return float(np.sum(e.confidences)), e.votes, -e.first_seen


def _vote_then_poe_key(e: Evidence) -> tuple:
    return e.votes, e.mean_log_prob, -e.first_seen


def _poe_plus_votes_key(e: Evidence) -> tuple:
    """The product of experts with the votes as a prior: mean log-probability plus log(votes)."""
    return e.mean_log_prob + float(np.log(e.votes)) if e.votes else -np.inf, e.votes, -e.first_seen


RANK_KEYS: dict[str, Callable[[Evidence], tuple]] = {
    "vote": _vote_key,  # TRM's rule: votes, ties to the higher mean confidence
    "poe": _poe_key,  # product of experts over every view's full distribution
    "confidence": _confidence_key,  # the halting head's mean confidence alone
    "weighted-vote": _weighted_vote_key,  # each vote weighted by its confidence
    "vote-poe": _vote_then_poe_key,  # votes, ties to the product of experts
    "poe+votes": _poe_plus_votes_key,  # product of experts plus log(votes)
}
NEEDS_LOG_PROBS = ("poe", "vote-poe", "poe+votes")


def rank_evidence(evidence: Sequence[Evidence], selector: str) -> list[Evidence]:
    """The candidates best first under ``selector``; a selector that needs log-probabilities falls
    back to ``vote`` when no view kept any."""
    if selector in NEEDS_LOG_PROBS and not any(v is not None for e in evidence for v in e.view_log_probs):
        selector = "vote"
    return sorted(evidence, key=RANK_KEYS[selector], reverse=True)


def _candidates(predictions: Sequence[Prediction], selector: str) -> list[Candidate]:
    ranked = rank_evidence(gather_evidence(predictions), selector)
    score = RANK_KEYS[selector]
    return [Candidate(e.grid, e.votes, e.mean_confidence, float(score(e)[0]), e.key) for e in ranked]


def vote(predictions: Sequence[Prediction]) -> list[Candidate]:
    """Rank by vote count (TRM's rule).

    Ties go to the higher mean confidence, because the halting head was trained to say when an
    answer is right; a candidate with no confidence at all ranks below any with one. Remaining ties
    go to the candidate seen first, so the ranking never depends on hash or sort instability.
    ``score`` is the vote count.
    """
    return _candidates(predictions, "vote")


def candidate_log_prob(grid: np.ndarray, view: Prediction) -> float | None:
    """Log-probability that ``view`` assigns to ``grid`` (original frame), or None if it cannot say.

    The grid is moved into the view's frame and encoded as a training label would be; the sum runs
    over every non-PAD label token (colour cells and the EOS border), exactly what the training
    loss covers, so the grid's size counts as much as its colours. None when the view has no
    log-probabilities or the grid, in the view's frame, does not fit its canvas.
    """
    if view.log_probs is None:
        return None
    framed = view.augmentation.apply(grid)
    if max(framed.shape) > view.canvas:
        return None
    tokens = encode_grid(framed, canvas=view.canvas)
    positions = np.flatnonzero(tokens != PAD)
    return float(view.log_probs[positions, tokens[positions]].sum())


def poe(predictions: Sequence[Prediction]) -> list[Candidate]:
    """Rank by a product of experts: each view is an expert over whole grids.

    The candidates are the distinct mapped-back predictions. A candidate's score is the mean, over
    the views that can express it (see ``candidate_log_prob``), of the log-probability the view
    gives it; the mean rather than the sum so a candidate is not penalised for the views whose
    canvas it does not fit. This uses every view's full distribution, not just its argmax, so a
    grid that many views rate nearly as likely can beat one a few views rate highest. A candidate no
    view can express scores -inf. Ties go to more votes, then to the candidate seen first.

    With no log-probabilities at all (e.g. a model run that did not keep logits) this is ``vote``.
    Predictions without log-probabilities still add candidates and votes but do not score.
    """
    return _candidates(predictions, "poe")


def _selector(name: str) -> Selector:
    return lambda predictions: _candidates(predictions, name)


SELECTORS: dict[str, Selector] = {"vote": vote, "poe": poe,
                                  **{name: _selector(name) for name in RANK_KEYS if name not in ("vote", "poe")}}


def rank_candidates(predictions: Sequence[Prediction], num_test_inputs: int,
                    selector: str = "vote") -> list[list[Candidate]]:
    """One ranked candidate list per test input of a task (empty where a test input got no prediction)."""
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    per_input: list[list[Prediction]] = [[] for _ in range(num_test_inputs)]
    for prediction in predictions:
        if not 0 <= prediction.test_index < num_test_inputs:
            raise ValueError(f"prediction for test input {prediction.test_index}, "
                             f"but the task has {num_test_inputs} test inputs")
        per_input[prediction.test_index].append(prediction)
    return [SELECTORS[selector](group) if group else [] for group in per_input]


def best_rank(ranked: Sequence[Candidate], truth: np.ndarray) -> int | None:
    """1-based rank of the candidate equal to ``truth``, or None when no candidate is."""
    key = grid_key(truth)
    for rank, candidate in enumerate(ranked, start=1):
        if candidate.key == key:
            return rank
    return None


def hit_at_k(ranked: Sequence[Candidate], truth: np.ndarray, k: int) -> bool:
    """Whether one of the first ``k`` candidates equals ``truth`` (pass@K for one test input)."""
    rank = best_rank(ranked, truth)
    return rank is not None and rank <= k
