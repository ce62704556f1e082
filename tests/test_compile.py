"""The compiled supervision step on the CPU: one graph per canvas and mode, no recompiles in steady
state, the same numbers as eager.

The fast test compiles with the ``aot_eager`` backend (dynamo's tracing and guards, which decide
recompiles, without inductor's slow code generation); the slow one with inductor, as on a GPU.
"""

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from arc_data.synthetic import synthetic_tasks
from pretrain.config import tiny
from pretrain.cpu_matmul import use_default_matmul, use_onednn_matmul
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream
from pretrain.distributed import World
from pretrain.evaluation import predict
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.model import build_model

CPU = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
CONFIG = tiny().replace(pos_encoding="rope2d", T=1, n=1, layers=1)  # small graphs: quick to trace


def _bucketed(seed: int = 0):
    catalogue = PuzzleCatalogue(synthetic_tasks(8, 0, max_side=4) + synthetic_tasks(8, 1, max_side=10), [], 4, 0,
                                canvas=10, bucket_canvas=True)
    data = DataConfig(train_sources=(), held_out_sources=(), num_aug=4, canvas=10, bucket_canvas=True)
    learner = Learner(CONFIG, OptimConfig(global_batch=4, micro_batch=2, lr_warmup_steps=1), catalogue.num_ids, CPU,
                      torch.float32, seed=seed, compile=False)
    streams = {c: TrainStream(catalogue, data, canvas=c) for c in catalogue.canvases()}
    slots = {c: Slots(learner.model, 4, CPU, c) for c in catalogue.canvases()}
    return catalogue, learner, streams, slots


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_one_graph_per_canvas_and_no_recompiles_in_steady_state():
    torch._dynamo.reset()
    counters.clear()
    catalogue, learner, streams, slots = _bucketed()
    assert catalogue.canvases() == [8, 10]
    learner.model.compile_step(backend="aot_eager")
    for canvas in (8, 10):  # warm-up: the first step on each canvas compiles its graph
        train_step(learner, slots[canvas], streams[canvas])
    assert _graphs() == 2
    for step in range(6):
        canvas = (8, 10)[step % 2]
        train_step(learner, slots[canvas], streams[canvas])
    assert _graphs() == 2 and not counters["recompiles"] and not counters["graph_break"]

    # Inference pads a short last batch to the batch size: one more graph per canvas, whatever the count.
    ids = np.zeros(5, dtype=np.int64)
    for rows in (5, 3, 1):
        inputs = np.full((rows, 100), 2, dtype=np.uint8)
        log_probs, q_halt = predict(learner.model, learner.puzzles, inputs, ids[:rows], 4, CPU.device)
        assert log_probs.shape == (rows, 100, CONFIG.vocab) and q_halt.shape == (rows,)
    assert _graphs() == 3 and not counters["recompiles"]

    # A fresh network of the same shape (the next task of a fine-tuning worker) reuses the graphs.
    fresh = build_model(CONFIG, seed=7)
    fresh.compile_step(backend="aot_eager")
    predict(fresh, learner.puzzles, inputs, ids[:1], 4, CPU.device)
    assert _graphs() == 3


def test_compiled_and_eager_steps_agree():
    torch._dynamo.reset()
    runs = []
    for compiled in (False, True):
        catalogue, learner, streams, slots = _bucketed(seed=1)
        if compiled:
            learner.model.compile_step(backend="aot_eager")
        losses = [float(train_step(learner, slots[c], streams[c])["loss"]) for c in (8, 10, 8)]
        runs.append((losses, [p.detach().clone() for p in learner.model.parameters()]))
    (eager_losses, eager_params), (compiled_losses, compiled_params) = runs
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    for a, b in zip(eager_params, compiled_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture
def default_matmul_after():
    yield
    use_default_matmul()


@pytest.mark.slow
@pytest.mark.parametrize("onednn", [False, True])
def test_inductor_compiled_step_matches_eager(onednn, default_matmul_after):
    """The backend a GPU uses, on the CPU: a few minutes of code generation. With oneDNN for the
    products (``pretrain.cpu_matmul``) as CPU runs have it, and without."""
    if onednn and not use_onednn_matmul():
        pytest.skip("oneDNN would round fp32 products on this CPU: the switch stays off")
    torch._dynamo.reset()
    counters.clear()
    runs = []
    for compiled in (False, True):
        catalogue, learner, streams, slots = _bucketed(seed=2)
        if compiled:
            learner.model.compile_step()
        losses = [float(train_step(learner, slots[c], streams[c])["loss"]) for c in (8, 10, 8, 10)]
        runs.append((losses, [p.detach().clone() for p in learner.model.parameters()]))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-4)
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert _graphs() == 2 and not counters["recompiles"]


def test_compiled_step_with_activation_checkpointing_gives_eager_gradients():
    torch._dynamo.reset()
    counters.clear()
    config = CONFIG.replace(n=2)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab, (2, 36), generator=g)
    puzzle = torch.randn(2, config.puzzle_dim, generator=g)
    grads = []
    for compiled in (False, True):
        model = build_model(config, seed=3)
        model.activation_checkpointing = True
        if compiled:
            model.compile_step(backend="aot_eager")
        _, logits, q = model(model.initial_carry(2, side=6), tokens, puzzle)
        (logits.square().mean() + q.sum()).backward()
        grads.append([p.grad for p in model.parameters()])
    assert not counters["graph_break"]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
