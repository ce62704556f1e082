import math
import time

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import MODEL_PRESETS, ModelConfig, swiglu_inner, tiny
from pretrain.model import (HRM, TRM, TRUNC_STD, apply_rope, build_model, build_rope, count_parameters,
                            halt_decision, trunc_normal_)

# ---------------------------------------------------------------------------------------------
# Parameter counts

# One attention block at the paper size: qkv 512x1536 + out 512x512 + gate-up 512x3072 + down 1536x512
# = 3,407,872.
ATT_BLOCK = 512 * 1536 + 512 * 512 + 512 * 3072 + 1536 * 512
HEADS = 12 * 512 + 512 * 12 + (512 * 2 + 2)  # token embedding + lm_head + q_head with bias = 13,314
# TRM-MLP: the sequence-mixing SwiGLU acts on the 916-long axis (16 prefix + 900 cells); its inner size
# follows the reference rule round(4 * 916 * 2/3) = 2443 -> next multiple of 256 = 2560, so per block
# 916x5120 + 2560x916 replaces the attention, and the channel SwiGLU 512x3072 + 1536x512 stays.
MLP_BLOCK = 916 * 5120 + 2560 * 916 + 512 * 3072 + 1536 * 512
EXPECTED = {
    "trm-att": 6_829_058,
    "trm-mlp": 18_801_666,
    # HRM: 4 L blocks + 4 H blocks of the same attention block, the same embedding and heads; the
    # initial states are buffers. 8 * 3,407,872 + 13,314 = 27,276,290, the reference's "about" figure.
    "hrm": 27_276_290,
    # tiny: hidden 64, SwiGLU inner 192: block 64x192 + 64x64 + 64x384 + 192x64 = 53,248; x2, plus
    # embedding 12x64, lm_head 64x12, q_head 64x2+2.
    "tiny": 2 * 53_248 + 768 + 768 + 130,
    "cpu-small": 2 * 53_248 + 768 + 768 + 130,  # the tiny network's shapes; canvas, RoPE and steps differ
}


# name -> (parameters per block, blocks): the paper-size networks, checked part by part
BLOCKS = {"trm-att": (ATT_BLOCK, 2), "trm-mlp": (MLP_BLOCK, 2),
          "hrm": (ATT_BLOCK, 8)}


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_parameter_counts(name):
    with torch.device("meta"):  # shapes only: no time spent drawing 27M initial weights
        model = build_model(MODEL_PRESETS[name]())
    assert count_parameters(model) == EXPECTED[name]
    # the initial states are buffers, not parameters
    names = {n for n, _ in model.named_parameters()}
    assert not any("init" in n for n in names)
    if name in BLOCKS:  # the totals split as the design says: blocks plus embedding and heads
        per_block, count = BLOCKS[name]
        nets = (model.L_net, model.H_net) if name.startswith("hrm") else (model.net,)
        assert [count_parameters(b) for net in nets for b in net.blocks] == [per_block] * count
        heads = model.embed_tokens.numel() + count_parameters(model.lm_head) + count_parameters(model.q_head)
        assert heads == HEADS


def test_swiglu_inner_follows_the_reference_rule():
    assert swiglu_inner(512) == 1536 and swiglu_inner(916) == 2560


def test_config_round_trip_and_validation():
    for make in MODEL_PRESETS.values():
        cfg = make()
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ModelConfig(arch="transformer")
    with pytest.raises(ValueError):
        ModelConfig(arch="trm", puzzle_dim=2048, prefix_tokens=2)  # needs 4 prefix tokens
    with pytest.raises(ValueError):
        ModelConfig.from_dict({**tiny().to_dict(), "bogus": 1})


def test_truncated_normal_has_the_exact_std_and_is_cut():
    assert TRUNC_STD == pytest.approx(0.8796, abs=1e-4)
    t = trunc_normal_(torch.empty(400_000), 0.5, torch.Generator().manual_seed(0))
    assert t.std().item() == pytest.approx(0.5, rel=5e-3)
    assert t.abs().max().item() <= 2 * 0.5 / TRUNC_STD + 1e-6


# ---------------------------------------------------------------------------------------------
# A plain, slow re-statement of the DESIGN pseudo-code, from the raw weights


def ref_rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def ref_rope_1d(x, base):
    """x (B, L, H, D): dims j and j + D/2 rotate by angle position * base^(-2j/D)."""
    B, L, H, D = x.shape
    out = torch.empty_like(x)
    pos = torch.arange(L, dtype=x.dtype).view(1, L, 1)
    for j in range(D // 2):
        angle = pos * (1.0 / base ** (2 * j / D))
        a, b = x[..., j], x[..., j + D // 2]
        out[..., j] = a * angle.cos() - b * angle.sin()
        out[..., j + D // 2] = b * angle.cos() + a * angle.sin()
    return out


def ref_attention(x, attn, cfg):
    B, L, C = x.shape
    H, D = cfg.heads, cfg.head_dim
    qkv = x @ attn.qkv.weight.T
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    q = ref_rope_1d(q.reshape(B, L, H, D), cfg.rope_base)
    k = ref_rope_1d(k.reshape(B, L, H, D), cfg.rope_base)
    v = v.reshape(B, L, H, D)
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(D)
    out = torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v).reshape(B, L, C)
    return out @ attn.out.weight.T


def ref_swiglu(x, mlp):
    h = x @ mlp.gate_up.weight.T
    inner = h.shape[-1] // 2
    return (F.silu(h[..., :inner]) * h[..., inner:]) @ mlp.down.weight.T


def ref_net(h, blocks, cfg):
    for blk in blocks:
        h = ref_rms(h + ref_attention(h, blk.attn, cfg), cfg.norm_eps)
        h = ref_rms(h + ref_swiglu(h, blk.mlp), cfg.norm_eps)
    return h


def ref_input(model, tokens, puzzle_emb):
    cfg = model.config
    B = tokens.shape[0]
    prefix = torch.zeros(B, cfg.prefix_tokens, cfg.hidden, dtype=puzzle_emb.dtype)
    prefix = torch.cat([puzzle_emb.unsqueeze(1), prefix[:, 1:]], dim=1)  # puzzle_dim == hidden here
    return math.sqrt(cfg.hidden) * torch.cat([prefix, model.embed_tokens[tokens]], dim=1)


def ref_heads(model, y):
    cfg = model.config
    logits = y[:, cfg.prefix_tokens:] @ model.lm_head.weight.T
    q = y[:, 0] @ model.q_head.weight.T + model.q_head.bias
    return logits, q


def ref_trm_step(model, y, z, tokens, puzzle_emb, truncate=True):
    cfg = model.config
    x = ref_input(model, tokens, puzzle_emb)
    net = lambda h: ref_net(h, model.net.blocks, cfg)  # noqa: E731
    for t in range(cfg.T):
        with torch.set_grad_enabled(t == cfg.T - 1 or not truncate):
            for _ in range(cfg.n):
                z = net(z + y + x)
            y = net(y + z)
    logits, q = ref_heads(model, y)
    return y.detach(), z.detach(), logits, q


def ref_hrm_step(model, z_H, z_L, tokens, puzzle_emb):
    cfg = model.config
    x = ref_input(model, tokens, puzzle_emb)
    L = lambda h: ref_net(h, model.L_net.blocks, cfg)  # noqa: E731
    H = lambda h: ref_net(h, model.H_net.blocks, cfg)  # noqa: E731
    calls = 0
    total = cfg.T * (cfg.n + 1)
    for _ in range(cfg.T):
        for _ in range(cfg.n):
            calls += 1
            with torch.set_grad_enabled(calls == total - 1):  # the last L call
                z_L = L(z_L + z_H + x)
        calls += 1
        with torch.set_grad_enabled(calls == total):  # the last H call
            z_H = H(z_H + z_L)
    logits, q = ref_heads(model, z_H)
    return z_H.detach(), z_L.detach(), logits, q


def _setup(cfg, batch=3, seed=0, dtype=torch.float32):
    """A model computing in `dtype` (float64: weights converted too, for a tight comparison)."""
    model = build_model(cfg, seed=seed, dtype=dtype).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # a non-zero q_head so gradients also flow through q
        model.q_head.weight.copy_(0.1 * torch.randn(model.q_head.weight.shape, generator=g))
    tokens = torch.randint(0, cfg.vocab, (batch, cfg.canvas ** 2), generator=g)
    puzzle = torch.randn(batch, cfg.puzzle_dim, generator=g).to(dtype)
    w_logits = torch.randn(batch, cfg.canvas ** 2, cfg.vocab, generator=g).to(dtype)
    w_q = torch.randn(batch, 2, generator=g).to(dtype)
    return model, tokens, puzzle, w_logits, w_q


def _grads(params, loss):
    for p in params:
        p.grad = None
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _compare_with_reference(model, ref_step, tokens, puzzle, w_logits, w_q, steps=2, **ref_kw):
    """Run `steps` chained supervision steps of the model and the reference; compare every output.

    float64 models are held to 1e-9. In float32 the outputs are held to 1e-4 and each gradient to a
    relative error of 1e-4 of its norm: summation order differs (e.g. in attention), and rounding
    grows over the 12 chained network calls of two supervision steps.
    """
    f64 = puzzle.dtype == torch.float64
    tol = dict(rtol=1e-9, atol=1e-9) if f64 else dict(rtol=1e-4, atol=1e-4)
    batch = tokens.shape[0]
    carry = model.initial_carry(batch)
    ry, rz = carry.y.clone(), carry.z.clone()
    for _ in range(steps):
        pe_m = puzzle.clone().requires_grad_(True)
        pe_r = puzzle.clone().requires_grad_(True)
        carry, logits, q = model(carry, tokens, pe_m)
        g_model = _grads([*model.parameters(), pe_m], (logits * w_logits).sum() + (q * w_q).sum())
        ry, rz, r_logits, r_q = ref_step(model, ry, rz, tokens, pe_r, **ref_kw)
        g_ref = _grads([*model.parameters(), pe_r], (r_logits * w_logits).sum() + (r_q * w_q).sum())
        assert logits.dtype == (torch.float64 if f64 else torch.float32)
        torch.testing.assert_close(logits, r_logits, **tol)
        torch.testing.assert_close(q, r_q, **tol)
        torch.testing.assert_close(carry.y, ry, **tol)
        torch.testing.assert_close(carry.z, rz, **tol)
        names = [n for n, _ in model.named_parameters()] + ["puzzle_emb"]
        for name, gm, gr in zip(names, g_model, g_ref):
            assert gr.abs().sum() > 0, name  # every parameter is reached
            if f64:
                torch.testing.assert_close(gm, gr, **tol, msg=lambda m, n=name: f"{n}: {m}")
            else:
                assert (gm - gr).norm() <= 1e-4 * gr.norm(), name
    return carry


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_trm_matches_a_plain_restatement_of_the_pseudocode(dtype):
    cfg = tiny()
    model, tokens, puzzle, w_logits, w_q = _setup(cfg, dtype=dtype)
    carry = _compare_with_reference(model, ref_trm_step, tokens, puzzle, w_logits, w_q, steps=2)
    # the carry moved away from the initial state
    assert not torch.allclose(carry.y, model.initial_carry(3).y)


def test_gradients_flow_only_through_the_last_cycle():
    """The reference without truncation (backprop through all T cycles) must give other gradients."""
    cfg = tiny()
    model, tokens, puzzle, w_logits, w_q = _setup(cfg, dtype=torch.float64)
    carry = model.initial_carry(3)
    pe_m, pe_full = puzzle.clone().requires_grad_(True), puzzle.clone().requires_grad_(True)
    params = [*model.parameters()]
    _, logits, q = model(carry, tokens, pe_m)
    g_model = _grads(params + [pe_m], (logits * w_logits).sum() + (q * w_q).sum())
    _, _, f_logits, f_q = ref_trm_step(model, carry.y, carry.z, tokens, pe_full, truncate=False)
    g_full = _grads(params + [pe_full], (f_logits * w_logits).sum() + (f_q * w_q).sum())
    torch.testing.assert_close(logits, f_logits, rtol=1e-9, atol=1e-9)  # same values ...
    names = [n for n, _ in model.named_parameters()] + ["puzzle_emb"]
    for name, gm, gf in zip(names, g_model, g_full):  # ... but full backprop reaches further back
        if name.startswith(("lm_head", "q_head")):  # the heads only see the final y: same gradient
            torch.testing.assert_close(gm, gf, rtol=1e-9, atol=1e-9)
        else:
            assert (gm - gf).norm() > 1e-3 * gf.norm(), name


def test_carry_is_detached():
    cfg = tiny()
    model, tokens, puzzle, _, _ = _setup(cfg)
    carry = model.initial_carry(3)
    new, logits, q = model(carry, tokens, puzzle.requires_grad_(True))
    assert logits.requires_grad and q.requires_grad
    for t in (new.y, new.z):
        assert not t.requires_grad and t.grad_fn is None


def test_hrm_matches_a_plain_restatement():
    cfg = tiny().replace(arch="hrm", T=2, n=2, prefix_tokens=1)
    model, tokens, puzzle, w_logits, w_q = _setup(cfg, seed=3, dtype=torch.float64)
    assert isinstance(model, HRM)
    _compare_with_reference(model, ref_hrm_step, tokens, puzzle, w_logits, w_q, steps=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q_head_starts_at_minus_five(dtype):
    cfg = tiny()
    model = build_model(cfg, dtype=dtype)
    tokens = torch.randint(0, cfg.vocab, (4, cfg.canvas ** 2))
    carry, logits, q = model(model.initial_carry(4), tokens, torch.randn(4, cfg.puzzle_dim))
    assert q.dtype == torch.float32 and logits.dtype == torch.float32
    assert carry.y.dtype == dtype
    assert (q == -5.0).all()
    assert logits.shape == (4, cfg.canvas ** 2, cfg.vocab)


def test_input_embedding_layout_with_a_puzzle_vector_wider_than_hidden():
    cfg = tiny().replace(puzzle_dim=100)  # 100 > 64: two prefix tokens, the second zero-padded
    model = build_model(cfg)
    tokens = torch.randint(0, cfg.vocab, (2, cfg.canvas ** 2))
    pe = torch.randn(2, 100)
    x = model.input_embedding(tokens, pe)
    s = math.sqrt(cfg.hidden)
    assert x.shape == (2, cfg.seq_len, cfg.hidden)
    torch.testing.assert_close(x[:, 0], s * pe[:, :64])
    torch.testing.assert_close(x[:, 1, :36], s * pe[:, 64:])
    assert (x[:, 1, 36:] == 0).all() and (x[:, 2:cfg.prefix_tokens] == 0).all()
    torch.testing.assert_close(x[:, cfg.prefix_tokens:], s * model.embed_tokens[tokens])


def test_reset_carry_only_touches_masked_slots():
    cfg = tiny()
    model, tokens, puzzle, _, _ = _setup(cfg)
    init = model.initial_carry(3)
    carry, _, _ = model(init, tokens, puzzle)
    mask = torch.tensor([True, False, True])
    reset = model.reset_carry(carry, mask)
    for new, old, start in ((reset.y, carry.y, init.y), (reset.z, carry.z, init.z)):
        assert torch.equal(new[mask], start[mask])
        assert torch.equal(new[~mask], old[~mask])


def test_tiny_forward_backward_is_fast():
    cfg = tiny()
    model = build_model(cfg)
    tokens = torch.randint(0, cfg.vocab, (8, cfg.canvas ** 2))
    pe = torch.zeros(8, cfg.puzzle_dim, requires_grad=True)
    carry = model.initial_carry(8)
    model(carry, tokens, pe)[1].sum().backward()  # warm-up
    # CPU time of one thread, best of three: a busy shared machine does not make this test flaky.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(3):
            start = time.process_time()
            _, logits, q = model(carry, tokens, pe)
            (logits.sum() + q.sum()).backward()
            times.append(time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    assert min(times) < 1.0


def test_trm_mlp_runs_and_mixes_along_the_sequence():
    cfg = tiny().replace(arch="trm-mlp")
    model = build_model(cfg)
    assert isinstance(model, TRM)
    inner = swiglu_inner(cfg.seq_len)
    assert model.net.blocks[0].token_mlp.gate_up.weight.shape == (2 * inner, cfg.seq_len)
    tokens = torch.randint(0, cfg.vocab, (2, cfg.canvas ** 2))
    pe = torch.randn(2, cfg.puzzle_dim, requires_grad=True)
    _, logits, q = model(model.initial_carry(2), tokens, pe)
    logits.sum().backward()
    assert pe.grad is not None and pe.grad.abs().sum() > 0
    with pytest.raises(ValueError):  # its weights are sized for the full canvas
        model(model.initial_carry(2, side=5), tokens[:, :25], pe)


# ---------------------------------------------------------------------------------------------
# Positions


def _score(cfg, side, q_cell, k_cell, qv, kv):
    """Rotated q . k between two tokens given by (row, col) on the canvas, or ("prefix", k)."""
    rope = build_rope(cfg, side)
    L = cfg.prefix_tokens + side * side

    def index(cell):
        return cell[1] if cell[0] == "prefix" else cfg.prefix_tokens + cell[0] * side + cell[1]

    q = apply_rope(qv.view(1, 1, 1, -1).expand(1, L, 1, qv.numel()).contiguous(), rope)[0, index(q_cell), 0]
    k = apply_rope(kv.view(1, 1, 1, -1).expand(1, L, 1, kv.numel()).contiguous(), rope)[0, index(k_cell), 0]
    return float(q @ k)


def test_rope2d_scores_do_not_depend_on_the_canvas_size():
    cfg = tiny().replace(pos_encoding="rope2d")
    g = torch.Generator().manual_seed(0)
    qv, kv = torch.randn(cfg.head_dim, generator=g), torch.randn(cfg.head_dim, generator=g)
    pairs = [((0, 0), (3, 7)), ((2, 5), (9, 1)), ((4, 4), (4, 4)), (("prefix", 0), (6, 2)), ((1, 8), ("prefix", 3))]
    for a, b in pairs:
        assert _score(cfg, 10, a, b, qv, kv) == pytest.approx(_score(cfg, 20, a, b, qv, kv), rel=1e-5, abs=1e-5)
    # and it is relative: shifting both cells by the same offset keeps the score
    assert _score(cfg, 10, (1, 1), (3, 4), qv, kv) == pytest.approx(_score(cfg, 20, (11, 6), (13, 9), qv, kv),
                                                                    rel=1e-4, abs=1e-4)
    # 1-D RoPE over flattened positions does depend on the canvas width (the test can fail)
    one_d = cfg.replace(pos_encoding="rope1d")
    assert _score(one_d, 10, (0, 0), (3, 7), qv, kv) != pytest.approx(_score(one_d, 20, (0, 0), (3, 7), qv, kv),
                                                                      rel=1e-3)


def test_rope1d_positions_are_the_flattened_sequence():
    cfg = tiny()
    rope = build_rope(cfg, cfg.canvas)
    D = cfg.head_dim
    x = torch.randn(1, cfg.seq_len, 2, D)
    torch.testing.assert_close(apply_rope(x, rope), ref_rope_1d(x, cfg.rope_base), rtol=1e-5, atol=1e-5)


def test_smaller_canvases_run_with_rope2d():
    cfg = tiny().replace(pos_encoding="rope2d")
    model = build_model(cfg)
    for side in (3, 7, 10):
        tokens = torch.randint(0, cfg.vocab, (2, side, side))
        carry, logits, q = model(model.initial_carry(2, side=side), tokens, torch.randn(2, cfg.puzzle_dim))
        assert logits.shape == (2, side * side, cfg.vocab) and q.shape == (2, 2)
    with pytest.raises(ValueError):
        model(model.initial_carry(2, side=3), torch.zeros(2, 10, dtype=torch.long), torch.zeros(2, cfg.puzzle_dim))


# ---------------------------------------------------------------------------------------------
# Halting


def test_halt_decision_rules():
    cfg = tiny().replace(halt_exploration=0.0)  # max_steps 4
    q = torch.tensor([[1.0, 5.0], [-1.0, -5.0], [-1.0, -5.0], [0.5, 0.0]])
    steps = torch.tensor([1, 1, 4, 2])
    # evaluation: only the step limit
    assert halt_decision(q, steps, cfg, training=False).tolist() == [False, False, True, False]
    # TRM training: q_halt > 0
    assert halt_decision(q, steps, cfg, training=True).tolist() == [True, False, True, True]
    # HRM training: q_halt > q_continue
    hrm = cfg.replace(arch="hrm", prefix_tokens=1)
    assert halt_decision(q, steps, hrm, training=True).tolist() == [False, True, True, True]
    # exploration always on: a slot cannot halt before its drawn minimum (>= 2), but always at the limit
    explore = cfg.replace(halt_exploration=1.0)
    g = torch.Generator().manual_seed(0)
    q_yes = torch.full((64, 2), 3.0)
    assert not halt_decision(q_yes, torch.ones(64, dtype=torch.long), explore, True, g).any()
    assert halt_decision(q_yes, torch.full((64,), 4), explore, True, g).all()
    some = halt_decision(q_yes, torch.full((64,), 2), explore, True, g)
    assert 0 < some.sum() < 64
