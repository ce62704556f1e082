"""Candidate selection: vote ranking and its tie-breaks, mapping back, product of experts, pass@K."""

import numpy as np
import pytest

from arc_data.encoding import VOCAB_SIZE, encode_grid
from augment.augmentation import IDENTITY, Augmentation
from augment.voting import (SELECTORS, Prediction, best_rank, candidate_log_prob, hit_at_k, poe,
                               rank_candidates, vote)

# No symmetry and distinct colours, so every non-identity augmentation changes it.
TRUTH = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
WRONG = np.array([[1, 2, 3], [4, 5, 7]], dtype=np.uint8)
OTHER = np.array([[9]], dtype=np.uint8)
VIEWS = [Augmentation(1, (0, 2, 3, 1, 4, 5, 6, 7, 8, 9)), Augmentation(4),
         Augmentation(6, (0, 9, 8, 7, 6, 5, 4, 3, 2, 1)), Augmentation(7),
         Augmentation(3, (0, 1, 2, 3, 4, 5, 6, 7, 9, 8))]


def pred(grid, augmentation=IDENTITY, confidence=None, log_probs=None, test_index=0, canvas=30):
    return Prediction(test_index, augmentation, np.asarray(grid, dtype=np.uint8), confidence, log_probs, canvas)


def grids(ranked):
    return [c.grid.tolist() for c in ranked]


def test_vote_ranks_by_count():
    ranked = vote([pred(OTHER), pred(WRONG), pred(TRUTH), pred(TRUTH), pred(WRONG), pred(TRUTH)])
    assert grids(ranked) == [TRUTH.tolist(), WRONG.tolist(), OTHER.tolist()]
    assert [c.votes for c in ranked] == [3, 2, 1]
    assert [c.score for c in ranked] == [3.0, 2.0, 1.0]


def test_vote_tie_goes_to_higher_mean_confidence():
    ranked = vote([pred(WRONG, confidence=0.9), pred(WRONG, confidence=0.1),  # mean 0.5
                   pred(TRUTH, confidence=0.6), pred(TRUTH, confidence=0.6)])  # mean 0.6
    assert grids(ranked) == [TRUTH.tolist(), WRONG.tolist()]
    assert ranked[0].mean_confidence == pytest.approx(0.6)
    assert ranked[1].mean_confidence == pytest.approx(0.5)


def test_vote_missing_confidence_ranks_lowest():
    ranked = vote([pred(WRONG), pred(TRUTH, confidence=0.01)])
    assert grids(ranked) == [TRUTH.tolist(), WRONG.tolist()]
    assert ranked[1].mean_confidence is None


def test_vote_last_tie_goes_to_first_appearance():
    forward = vote([pred(WRONG, confidence=0.5), pred(TRUTH, confidence=0.5)])
    backward = vote([pred(TRUTH, confidence=0.5), pred(WRONG, confidence=0.5)])
    assert grids(forward) == [WRONG.tolist(), TRUTH.tolist()]
    assert grids(backward) == [TRUTH.tolist(), WRONG.tolist()]


def test_grids_of_different_shape_never_merge():
    flat = np.array([[1, 2, 3, 4, 5, 6]], dtype=np.uint8)  # same cells as TRUTH in another shape
    ranked = vote([pred(TRUTH), pred(flat)])
    assert [c.votes for c in ranked] == [1, 1]


def test_augmented_predictions_are_mapped_back():
    views = VIEWS[:3]
    augmented = [aug.apply(TRUTH) for aug in views]
    assert len({a.tobytes() + bytes(a.shape) for a in augmented}) == 3  # raw grids all differ
    # Two identical raw decoys would win if predictions were not mapped back to the original frame.
    predictions = [pred(g, aug) for g, aug in zip(augmented, views)] + [pred(WRONG), pred(WRONG)]
    for selector in (vote, poe):
        ranked = selector(predictions)
        assert np.array_equal(ranked[0].grid, TRUTH)
        assert ranked[0].votes == 3


def test_candidate_grids_are_read_only_copies():
    source = TRUTH.copy()
    ranked = vote([pred(source)])
    source[0, 0] = 9
    assert ranked[0].grid[0, 0] == 1
    assert not ranked[0].grid.flags.writeable


def log_probs_favouring(weights: dict, augmentation=IDENTITY, canvas=30):
    """Per-cell log-probabilities that put ``weight`` on each grid's label tokens (in the view's frame)."""
    probs = np.full((canvas * canvas, VOCAB_SIZE), 0.02)
    for grid, weight in weights.items():
        tokens = encode_grid(augmentation.apply(np.array(grid, dtype=np.uint8)), canvas)
        probs[np.arange(canvas * canvas), tokens] += weight
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def test_poe_prefers_higher_log_prob_over_more_votes():
    truth, wrong = tuple(map(tuple, TRUTH.tolist())), tuple(map(tuple, WRONG.tolist()))
    # Every view rates TRUTH above WRONG, yet three views' argmax is WRONG and only two's is TRUTH.
    predictions = []
    for k, aug in enumerate(VIEWS):
        shown = WRONG if k < 3 else TRUTH
        predictions.append(pred(aug.apply(shown), aug, confidence=0.9,
                                log_probs=log_probs_favouring({truth: 0.6, wrong: 0.3}, aug)))
    assert np.array_equal(vote(predictions)[0].grid, WRONG)
    ranked = poe(predictions)
    assert np.array_equal(ranked[0].grid, TRUTH)
    assert ranked[0].votes == 2 and ranked[1].votes == 3
    assert ranked[0].score > ranked[1].score


def test_poe_score_is_mean_over_views():
    lp_a = log_probs_favouring({((1,),): 0.5})
    lp_b = log_probs_favouring({((2,),): 0.5})
    predictions = [pred([[1]], log_probs=lp_a), pred([[2]], log_probs=lp_b)]
    ranked = poe(predictions)
    expected = np.mean([candidate_log_prob(ranked[0].grid, p) for p in predictions])
    assert ranked[0].score == pytest.approx(expected)


def test_log_prob_covers_colour_cells_and_eos_border():
    canvas = 3
    uniform = np.full((canvas * canvas, VOCAB_SIZE), np.log(1 / VOCAB_SIZE))
    view = pred([[1, 2], [3, 4]], log_probs=uniform, canvas=canvas)
    # A 2x2 grid on a 3-canvas: 4 colour cells, 2 EOS below, 2 EOS to the right; the corner is PAD.
    assert candidate_log_prob(np.ones((2, 2), np.uint8), view) == pytest.approx(8 * np.log(1 / VOCAB_SIZE))
    # At the canvas edge there is no EOS border: 9 colour cells only.
    assert candidate_log_prob(np.ones((3, 3), np.uint8), view) == pytest.approx(9 * np.log(1 / VOCAB_SIZE))
    assert candidate_log_prob(np.ones((4, 4), np.uint8), view) is None  # does not fit the canvas
    assert candidate_log_prob(np.ones((2, 2), np.uint8), pred([[1]])) is None  # no log-probs


def test_poe_without_log_probs_is_vote():
    predictions = [pred(WRONG, confidence=0.2), pred(TRUTH, confidence=0.8), pred(OTHER), pred(OTHER)]
    assert grids(poe(predictions)) == grids(vote(predictions))


def test_poe_ties_go_to_votes_then_first_appearance():
    flat = np.zeros((1, 1), dtype=np.uint8)
    uniform = np.full((900, VOCAB_SIZE), np.log(1 / VOCAB_SIZE))
    # Same-shape candidates under uniform log-probs all score the same.
    ranked = poe([pred(flat, log_probs=uniform), pred([[5]], log_probs=uniform), pred([[5]], log_probs=uniform)])
    assert grids(ranked) == [[[5]], [[0]]]
    ranked = poe([pred([[3]], log_probs=uniform), pred([[4]], log_probs=uniform)])
    assert grids(ranked) == [[[3]], [[4]]]


def test_rank_candidates_per_test_input():
    predictions = [pred(TRUTH, test_index=0), pred(WRONG, test_index=2), pred(WRONG, test_index=2)]
    for selector in SELECTORS:
        ranked = rank_candidates(predictions, 3, selector)
        assert len(ranked) == 3
        assert grids(ranked[0]) == [TRUTH.tolist()]
        assert ranked[1] == []
        assert ranked[2][0].votes == 2


def test_rank_candidates_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown selector"):
        rank_candidates([pred(TRUTH)], 1, "majority")
    with pytest.raises(ValueError, match="test input 1"):
        rank_candidates([pred(TRUTH, test_index=1)], 1)


def test_prediction_checks_log_prob_shape():
    with pytest.raises(ValueError, match="log_probs"):
        pred(TRUTH, log_probs=np.zeros((900, 10)))


def test_hit_at_k_and_best_rank():
    ranked = vote([pred(OTHER), pred(OTHER), pred(WRONG), pred(WRONG), pred(TRUTH)])
    assert best_rank(ranked, TRUTH) == 3
    assert best_rank(ranked, OTHER) == 1
    assert best_rank(ranked, np.zeros((2, 2), np.uint8)) is None
    assert not hit_at_k(ranked, TRUTH, 2)
    assert hit_at_k(ranked, TRUTH, 3)
    assert hit_at_k(ranked, OTHER, 1)
    assert not hit_at_k([], TRUTH, 2)
    assert best_rank(ranked, TRUTH.astype(np.int64)) == 3  # dtype does not matter, values do
