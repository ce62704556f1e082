import math

import pytest
import torch

from arc_data.encoding import PAD
from pretrain.losses import (act_loss, log_stablemax, q_continue_target, stablemax, stablemax_cross_entropy,
                             summarize_metrics)


def _s(x: float) -> float:
    return x + 1 if x >= 0 else 1 / (1 - x)


def test_stablemax_cross_entropy_against_a_direct_formula():
    g = torch.Generator().manual_seed(0)
    B, S, V = 3, 7, 12
    logits = 4 * torch.randn(B, S, V, generator=g)
    labels = torch.randint(1, V, (B, S), generator=g)
    labels[0, :3] = PAD
    labels[2, 5] = PAD
    got = stablemax_cross_entropy(logits, labels)
    assert got.dtype == torch.float64 and got.shape == (B,)
    for b in range(B):
        terms = []
        for t in range(S):
            if labels[b, t] == PAD:
                continue
            row = [_s(float(v)) for v in logits[b, t]]
            terms.append(-math.log(row[int(labels[b, t])] / sum(row)))
        assert got[b].item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_pad_positions_do_not_matter_and_empty_sequences_give_zero():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 12, generator=g)
    labels = torch.tensor([[3, PAD, 4, PAD, 5], [PAD] * 5])
    changed = logits.clone()
    changed[0, 1] += 100
    changed[1] -= 7
    a, b = stablemax_cross_entropy(logits, labels), stablemax_cross_entropy(changed, labels)
    assert torch.equal(a, b)
    assert a[1].item() == 0.0


def test_stablemax_is_a_distribution_with_finite_gradients():
    x = torch.tensor([[-1e6, -3.0, 0.0, 2.5, 1e6]], requires_grad=True)
    assert log_stablemax(x).exp().sum().item() == pytest.approx(1.0, rel=1e-12)
    assert torch.equal(stablemax(torch.tensor([-1.0, 0.0, 3.0])), torch.tensor([0.5, 1.0, 4.0]))
    stablemax_cross_entropy(x.unsqueeze(0).expand(1, 1, 5), torch.tensor([[1]])).sum().backward()
    assert torch.isfinite(x.grad).all()


def _hand_example():
    # V = 3; PAD = 0 is never a target here except where it marks ignored cells.
    logits = torch.tensor([
        [[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]],   # s = (1,2,1): p(1) = 1/2 ; s = (1,1,4): p(2) = 2/3; both right
        [[5.0, 5.0, 5.0], [0.0, -1.0, 0.0]],  # first cell ignored ; s = (1,.5,1): p(1) = 1/5; argmax 0: wrong
    ])
    labels = torch.tensor([[1, 2], [PAD, 1]])
    q_logits = torch.zeros(2, 2)              # BCE(0, anything) = log 2
    halted = torch.tensor([True, False])
    steps = torch.tensor([3, 1])
    return logits, labels, q_logits, halted, steps


def test_act_loss_normalisation_by_hand():
    logits, labels, q, halted, steps = _hand_example()
    loss, m = act_loss(logits, labels, q, halted, steps, global_batch_size=4)
    lm = (math.log(2) + math.log(1.5)) / 2 + math.log(5)  # per-sequence means, summed
    expected = (lm + 0.5 * 2 * math.log(2)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["lm_loss"].item() == pytest.approx(lm, rel=1e-6)
    # metrics count halted sequences only: sequence 0 (exactly right, q_halt = 0 >= 0 agrees)
    assert m["count"].item() == 1 and m["exact_accuracy"].item() == 1
    assert m["token_accuracy"].item() == 1 and m["q_halt_accuracy"].item() == 1 and m["steps"].item() == 3
    assert not any(v.requires_grad for v in m.values())
    means = summarize_metrics(m, batch_size=2)
    assert means["exact_accuracy"] == 1.0 and means["lm_loss"] == pytest.approx(lm / 2, rel=1e-6)


def test_act_loss_q_halt_target_is_exactness():
    logits, labels, _, halted, steps = _hand_example()
    q = torch.tensor([[2.0, 0.0], [-3.0, 0.0]], requires_grad=True)
    loss, m = act_loss(logits, labels, q, halted, steps, global_batch_size=2)
    loss.backward()
    # d/dq BCE(q, t) = sigmoid(q) - t; times 0.5 / batch: sequence 0 is right (t=1), sequence 1 wrong (t=0)
    expected = torch.tensor([0.5 * (torch.sigmoid(torch.tensor(2.0)) - 1) / 2,
                             0.5 * torch.sigmoid(torch.tensor(-3.0)) / 2])
    torch.testing.assert_close(q.grad[:, 0], expected)
    assert torch.equal(q.grad[:, 1], torch.zeros(2))  # TRM: no continue loss


def test_hrm_continue_loss_and_target():
    logits, labels, q, halted, steps = _hand_example()
    target = torch.tensor([0.25, 1.0])
    loss, m = act_loss(logits, labels, q, halted, steps, global_batch_size=4, target_q_continue=target)
    lm = (math.log(2) + math.log(1.5)) / 2 + math.log(5)
    assert loss.item() == pytest.approx((lm + 0.5 * 4 * math.log(2)) / 4, rel=1e-6)
    assert m["q_continue_loss"].item() == pytest.approx(2 * math.log(2), rel=1e-6)

    next_q = torch.tensor([[1.0, 3.0], [1.0, 3.0], [-2.0, -4.0]])
    last = torch.tensor([False, True, False])
    expected = torch.sigmoid(torch.tensor([3.0, 1.0, -2.0]))  # max unless last step, then halt only
    torch.testing.assert_close(q_continue_target(next_q, last), expected)
