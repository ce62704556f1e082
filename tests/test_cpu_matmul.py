"""oneDNN for fp32 products on a CPU (``pretrain.cpu_matmul``): the probe tells fp32 from bf16, the
switch can be refused, the attention that keeps its products off oneDNN is PyTorch's bit for bit,
and a training step of the network gives the same numbers either way."""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from pretrain import cpu_matmul
from pretrain.config import cpu_small
from pretrain.model import build_model


@pytest.fixture(autouse=True)
def default_matmul_after():
    yield
    cpu_matmul.use_default_matmul()


def test_the_probe_separates_fp32_from_bf16_products():
    fp32 = cpu_matmul.probe_relative_error(torch.matmul)
    bf16 = cpu_matmul.probe_relative_error(lambda a, b: a.bfloat16().float() @ b.bfloat16().float())
    assert fp32 < cpu_matmul.FP32_RELATIVE_ERROR < bf16


def test_the_environment_keeps_the_default(monkeypatch):
    monkeypatch.setenv(cpu_matmul.ENV_SWITCH, "mkl")
    assert not cpu_matmul.use_onednn_matmul()
    assert not cpu_matmul.onednn_matmul_on()


def test_switched_on_products_keep_fp32_precision():
    if not cpu_matmul.use_onednn_matmul():
        pytest.skip("oneDNN would round fp32 products on this CPU: the switch stays off")
    assert cpu_matmul.onednn_matmul_on()
    assert cpu_matmul.probe_relative_error(torch.matmul) < cpu_matmul.FP32_RELATIVE_ERROR


def _qkv(seed: int) -> list[torch.Tensor]:
    """q, k, v (B, H, L, D) laid out as the model makes them: views of a (B, L, H, D) buffer."""
    qkv = torch.randn(3, 68, 3, 4, 16, generator=torch.Generator().manual_seed(seed))
    return [t.transpose(1, 2).detach().requires_grad_() for t in qkv.unbind(2)]


@pytest.mark.parametrize("switched_on", [False, True])
def test_flash_attention_is_pytorchs_bit_for_bit(switched_on):
    if switched_on:
        cpu_matmul.use_onednn_matmul()
    results = []
    for attend in (F.scaled_dot_product_attention, cpu_matmul.flash_attention):
        q, k, v = _qkv(0)
        out = attend(q, k, v)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        results.append([out.detach(), q.grad, k.grad, v.grad])
    for ours, theirs in zip(*results):
        assert torch.equal(ours, theirs)


def test_the_attention_ops_describe_their_outputs_to_the_compiler():
    torch.library.opcheck(cpu_matmul._forward, tuple(_qkv(2)))


def _step_results(model, tokens):
    carry = model.initial_carry(tokens.shape[0], side=8)
    carry, logits, q_logits = model(carry, tokens, None)
    (logits.logsumexp(-1).mean() + q_logits.sum()).backward()
    return [logits.detach(), q_logits.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]


CONFIG = cpu_small().replace(puzzle_dim=0, canvas=8)
TOKENS = torch.randint(0, CONFIG.vocab, (4, 64), generator=torch.Generator().manual_seed(3))


def _assert_same_numbers(ours, theirs):
    assert len(ours) == len(theirs) > 2
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_training_step_gives_the_same_numbers_with_onednn():
    default = _step_results(build_model(CONFIG, seed=5), TOKENS)
    if not cpu_matmul.use_onednn_matmul():
        pytest.skip("oneDNN would round fp32 products on this CPU: the switch stays off")
    _assert_same_numbers(_step_results(build_model(CONFIG, seed=5), TOKENS), default)


def test_a_compiled_step_keeps_the_attention_in_one_graph():
    if not cpu_matmul.use_onednn_matmul():
        pytest.skip("oneDNN would round fp32 products on this CPU: the switch stays off")
    eager = _step_results(build_model(CONFIG, seed=5), TOKENS)
    torch._dynamo.reset()
    counters.clear()
    model = build_model(CONFIG, seed=5)
    model.compile_step(backend="aot_eager")  # dynamo's tracing without inductor's slow code generation
    compiled = _step_results(model, TOKENS)
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1
    _assert_same_numbers(compiled, eager)
