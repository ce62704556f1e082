"""Tests that need a CUDA GPU: ``python3 -m pytest -m gpu`` (each skips itself without one); about
three minutes on one H100.

What the CPU tests cannot reach: bf16 and compiled kernels on the device (training and inference,
and a submission worker that compiles), the memory the device really allocates (micro-batch choice,
puzzle table, an out-of-memory retry), and workers on several GPUs. Results on a GPU are not
bit-reproducible (flash-attention's backward and ``index_add_`` accumulate in a nondeterministic
order), so comparisons use tolerances, each derived where it is used.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from arc_data.sources import load_bundled
from arc_data.synthetic import synthetic_tasks
from pretrain.config import tiny, trm_att
from pretrain.data import DataConfig, PuzzleCatalogue, TrainStream
from pretrain.distributed import World
from pretrain.evaluation import predict
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.memory import auto_micro_batch, measure_bytes_per_sample
from pretrain.model import build_model
from pretrain.puzzle_embedding import PuzzleEmbedding

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def cuda():
    device = torch.device("cuda", 0)
    torch.cuda.empty_cache()
    yield device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()


def _world(device):
    return World(rank=0, size=1, local_rank=0, device=device)


def _stream(canvas=10, bucket=False):
    catalogue = PuzzleCatalogue(synthetic_tasks(8, 0, max_side=4) + synthetic_tasks(8, 1, max_side=10), [], 4, 0,
                                canvas=canvas, bucket_canvas=bucket)
    data = DataConfig(train_sources=(), held_out_sources=(), num_aug=4, canvas=canvas, bucket_canvas=bucket)
    return catalogue, data


def _losses(learner, slots, streams, canvases):
    return torch.stack([train_step(learner, slots[c], streams[c])["loss"] for c in canvases]).cpu()


def _share_apart(weights, reference, lr):
    """The share of weights that ended more than half an AdamATan2 sign flip away from the reference.

    AdamATan2's first update is lr * atan2(g, |g|) = lr * pi/4 * sign(g), whatever the size of g: a
    gradient near zero whose sign flips with the summation order (fp32 rounding, nondeterministic
    kernels) moves its weight 2 * lr * pi/4 the other way (1.6e-4 at lr 1e-4), far beyond rounding and
    beyond a tolerance such as 1e-5. So a tolerance of that order (half a flip) separates weights that
    agree up to rounding from weights that went their own way; only a small share may have.
    """
    flip = 2 * lr * math.pi / 4
    apart = [((w - r).abs() > flip / 2).sum().item() for w, r in zip(weights, reference)]
    return sum(apart) / sum(r.numel() for r in reference)


def test_bf16_against_fp32_on_the_same_batch(cuda):
    config = trm_att().replace(pos_encoding="rope2d")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab, (4, 16 * 16), generator=g).to(cuda)
    puzzle = torch.randn(4, config.puzzle_dim, generator=g).to(cuda)
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build_model(config, dtype=dtype, device=cuda)
        _, out, _ = model(model.initial_carry(4, cuda, side=16), tokens, puzzle)
        logits[dtype] = out.float()
    full, half = logits[torch.float32], logits[torch.bfloat16]
    assert torch.isfinite(half).all() and not torch.equal(full, half)
    assert (full - half).norm() < 0.05 * full.norm()

    catalogue, data = _stream()
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        learner = Learner(tiny(), OptimConfig(global_batch=16, lr=1e-3, lr_warmup_steps=1), catalogue.num_ids,
                          _world(cuda), dtype, compile=False)
        slots = {10: Slots(learner.model, 16, _world(cuda), 10)}
        losses[dtype] = _losses(learner, slots, {10: TrainStream(catalogue, data)}, [10] * 3)
    assert torch.isfinite(losses[torch.bfloat16]).all()
    torch.testing.assert_close(losses[torch.bfloat16], losses[torch.float32], rtol=0.03, atol=0)


def test_compiled_against_eager_without_recompiles(cuda):
    torch._dynamo.reset()
    counters.clear()
    config = tiny().replace(pos_encoding="rope2d")
    catalogue, data = _stream(bucket=True)
    runs = []
    for compiled in (False, True):
        learner = Learner(config, OptimConfig(global_batch=8, micro_batch=4, lr_warmup_steps=1), catalogue.num_ids,
                          _world(cuda), torch.float32, seed=1, compile=compiled)
        streams = {c: TrainStream(catalogue, data, canvas=c) for c in catalogue.canvases()}
        slots = {c: Slots(learner.model, 8, _world(cuda), c) for c in catalogue.canvases()}
        warm = _losses(learner, slots, streams, catalogue.canvases())
        graphs = counters["stats"]["unique_graphs"]
        steady = _losses(learner, slots, streams, catalogue.canvases() * 3)
        if compiled:
            assert graphs == len(catalogue.canvases()) == counters["stats"]["unique_graphs"]
            assert not counters["recompiles"]
        runs.append(torch.cat([warm, steady]))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-3, atol=1e-4)


def test_micro_batches_equal_the_full_batch_on_the_gpu(cuda):
    catalogue, data = _stream()
    runs = []
    for micro in (None, 3):
        optim = OptimConfig(global_batch=8, micro_batch=micro, lr_warmup_steps=1)
        learner = Learner(tiny(), optim, catalogue.num_ids, _world(cuda), torch.float32, seed=2, compile=False)
        slots = {10: Slots(learner.model, 8, _world(cuda), 10)}
        losses = _losses(learner, slots, {10: TrainStream(catalogue, data)}, [10] * 4)
        runs.append((losses, [p.detach().clone() for p in learner.model.parameters()]))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-6)
    # A weight apart by half a flip is one whose gradient sign the summation order decided: rare.
    assert _share_apart(runs[1][1], runs[0][1], optim.lr) < 1e-3


def test_auto_micro_batch_keeps_a_paper_step_within_its_budget(cuda):
    config, side, batch = trm_att(), 30, 64
    budget = 6 * 2**30
    micro = auto_micro_batch(config, side, batch, cuda, torch.bfloat16, budget_bytes=budget)
    assert 1 <= micro < batch and batch % micro == 0
    catalogue, data = _stream(canvas=30)
    learner = Learner(config, OptimConfig(global_batch=batch, micro_batch=micro, lr_warmup_steps=1),
                      catalogue.num_ids, _world(cuda), torch.bfloat16, compile=False)
    slots = Slots(learner.model, batch, _world(cuda), side)
    stream = TrainStream(catalogue, data)
    train_step(learner, slots, stream)  # optimizer state allocated
    torch.cuda.synchronize(cuda)
    base = torch.cuda.memory_allocated(cuda)
    torch.cuda.reset_peak_memory_stats(cuda)
    train_step(learner, slots, stream)
    torch.cuda.synchronize(cuda)
    assert torch.cuda.max_memory_allocated(cuda) - base <= budget


def test_host_puzzle_table_takes_no_device_memory_and_learns_the_same(cuda):
    tables = {}
    for storage in ("device", "host"):
        torch.cuda.synchronize(cuda)
        before = torch.cuda.memory_allocated(cuda)
        table = PuzzleEmbedding(200_000, 512, cuda, storage)
        resident = torch.cuda.memory_allocated(cuda) - before
        assert resident == (200_000 * 512 * 4 if storage == "device" else 0)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            ids = torch.randint(0, 200_000, (64,), generator=g).to(cuda)
            rows = table.lookup(ids)
            (rows * torch.randn(64, 512, generator=g).to(cuda)).sum().backward()
            table.step(1e-2, 0.1)
        tables[storage] = table.weight.cpu()
    assert torch.equal(tables["device"], tables["host"])


def _small_tasks(count):
    from submission.runner import task_size
    return sorted(load_bundled("arc-agi-2", "eval"), key=task_size)[:count]


def test_an_out_of_memory_retry_still_answers_every_test_input(cuda):
    from submission.config import FinetuneConfig
    from submission.finetune import solve_task, task_canvas
    from submission.network import Network

    network = Network.fresh_init(trm_att().replace(pos_encoding="rope2d"))
    task = _small_tasks(1)[0]
    side = task_canvas(task, network, FinetuneConfig())
    probe = build_model(network.config, dtype=torch.bfloat16, device=cuda)
    cost = measure_bytes_per_sample(probe, side)
    del probe
    torch.cuda.empty_cache()
    # A batch whose activations need at least 4 GiB, and room for 60% of it plus 1 GiB for the rest
    # (weights, optimizer, carry): the first try runs out of memory, half the batch fits.
    batch = max(128, 64 * int(np.ceil(4 * 2**30 / cost.per_sample / 64)))
    # The whole batch first (no "auto" choice, no compile: this test is about the retry), so a
    # micro-batch below the batch in the outcome means the first try ran out of memory.
    config = FinetuneConfig(num_aug=16, steps=3, embedding_steps=0, batch=batch, micro_batch=None, views=8,
                            inference_batch=64, compile=False, max_task_seconds=600.0)
    cap = torch.cuda.memory_allocated(cuda) + 2**30 + cost.fixed + 0.6 * batch * cost.per_sample
    total = torch.cuda.get_device_properties(cuda).total_memory
    if cap >= total:
        pytest.skip("this GPU cannot be capped below the batch's need")
    torch.cuda.set_per_process_memory_fraction(cap / total, cuda)
    try:
        outcome = solve_task(task, network, config, cuda, 600.0, torch.bfloat16)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda)
    assert len(outcome.ranked) == len(task.test_inputs)
    assert all(len(candidates) >= 1 for candidates in outcome.ranked), outcome.note
    assert outcome.micro_batch < batch, f"no retry happened: micro-batch {outcome.micro_batch} of {batch}"
    assert outcome.finetune_steps == config.steps


def test_compiled_bf16_inference_against_eager(cuda):
    torch._dynamo.reset()
    config = tiny().replace(forward_dtype="bfloat16", max_steps=4)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(2, config.vocab, (32, 10 * 10), generator=g, dtype=torch.uint8).numpy()
    ids = np.arange(32) % 8
    puzzles = PuzzleEmbedding(8, config.puzzle_dim, cuda)
    puzzles.weight.copy_(torch.randn(8, config.puzzle_dim, generator=g))  # rows as a trained table has them
    runs = {}
    for compiled in (False, True):
        model = build_model(config, dtype=torch.bfloat16, seed=3, device=cuda)
        if compiled:
            model.compile_step()
        runs[compiled] = predict(model, puzzles, inputs, ids, 32, cuda)
    (eager, eager_q), (fused, fused_q) = runs[False], runs[True]
    assert np.isfinite(fused).all() and np.isfinite(fused_q).all()
    # bf16 keeps 8 significant bits (a relative rounding of up to 2**-9 per operation); the compiled
    # graph keeps fp32 inside its fused kernels where eager rounds after each operation, so the two
    # drift apart by a few roundings per network call over the 24 calls of 4 supervision steps: about
    # a percent of a probability. A wrong graph (a lost input, a wrong rotation) differs by tens of percent.
    assert np.abs(np.exp(fused) - np.exp(eager)).mean() < 0.02
    assert (fused.argmax(-1) == eager.argmax(-1)).mean() > 0.9
    np.testing.assert_allclose(fused_q, eager_q, atol=0.05)


def test_one_compiled_bf16_worker_at_canvas_30(tmp_path, capsys):
    from submission.config import FinetuneConfig
    from submission.network import Network
    from submission.runner import run_submission

    assert torch.cuda.is_bf16_supported()  # so the worker computes in bf16
    tasks = _small_tasks(2)
    network = Network.fresh_init(tiny().replace(canvas=30, max_steps=2))
    config = FinetuneConfig(num_aug=8, steps=4, embedding_steps=1, batch=16, micro_batch=None, views=8,
                            inference_batch=8, bucket_canvas=False, compile=True, selector="vote",
                            max_task_seconds=120.0)
    out = tmp_path / "submission.json"
    summary = run_submission(tasks, network, config, out, time_limit=170, workers=1, quiet=True)
    log = capsys.readouterr().err
    assert "compiling failed" not in log, log
    outcomes = [summary.outcomes[t.id] for t in tasks]
    assert all(o.note == "ok" for o in outcomes), log
    assert all(o.canvas == 30 and o.finetune_steps == config.steps for o in outcomes)
    # One compile per shape in the worker: before its first task, off the task's clock; not again.
    assert sum(o.warmup_seconds > 0 for o in outcomes) == 1, [o.warmup_seconds for o in outcomes]
    written = json.loads(out.read_text())
    assert all(len(written[t.id]) == len(t.test_inputs) for t in tasks)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_workers_on_two_devices(tmp_path):
    from submission.config import cpu, fresh_model_config
    from submission.network import Network
    from submission.runner import run_submission

    tasks = _small_tasks(4)
    config = dataclasses.replace(cpu(), steps=10, views=8, max_task_seconds=120.0)
    out = tmp_path / "submission.json"
    summary = run_submission(tasks, Network.fresh_init(fresh_model_config()), config, out, time_limit=600,
                             workers=2, quiet=True)
    assert not summary.unfinished and set(summary.outcomes) == {t.id for t in tasks}
    assert all(o.note == "ok" for o in summary.outcomes.values()), [o.note for o in summary.outcomes.values()]
    written = json.loads(out.read_text())
    assert set(written) == {t.id for t in tasks}
    assert all(len(written[t.id]) == len(t.test_inputs) for t in tasks)
    assert np.mean([len(o.ranked) for o in summary.outcomes.values()]) >= 1
