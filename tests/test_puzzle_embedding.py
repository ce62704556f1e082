import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrain.config import tiny
from pretrain.model import build_model
from pretrain.puzzle_embedding import PuzzleEmbedding, sum_rows

LR, WD = 0.01, 0.1


def _table(num_ids=6, dim=3, seed=0) -> PuzzleEmbedding:
    table = PuzzleEmbedding(num_ids, dim)
    table.weight = torch.randn(num_ids, dim, generator=torch.Generator().manual_seed(seed))
    return table


def _dense_reference(weight, ids, grads, lr, wd):
    """Plain loops: sum each row's gradients, then decay and step against the sign, for those rows only."""
    out = weight.clone()
    totals = {}
    for i, g in zip(ids.tolist(), grads):
        totals[i] = totals.get(i, torch.zeros_like(g)) + g
    for i, g in totals.items():
        out[i] = weight[i] * (1 - lr * wd) - lr * torch.sign(g)
    return out


def test_table_starts_at_zero_and_is_not_a_parameter():
    table = PuzzleEmbedding(10, 4)
    assert torch.equal(table.weight, torch.zeros(10, 4))
    assert not isinstance(table.weight, torch.nn.Parameter) and not table.weight.requires_grad


def test_sparse_sign_sgd_against_a_dense_reference():
    table = _table()
    before = table.weight.clone()
    ids = torch.tensor([1, 3, 1, 4])
    # row 1 appears twice; the sum of its gradients has another sign than the first one alone,
    # and its last component sums to exactly 0 (sign 0: decay only)
    grads = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.3, -0.3], [-3.0, 1.0, -0.5], [-1.0, 2.0, 0.0]])
    rows = table.lookup(ids)
    (rows * grads).sum().backward()
    updated = table.step(LR, WD)
    assert sorted(updated.tolist()) == [1, 3, 4]
    expected = _dense_reference(before, ids, grads, LR, WD)
    torch.testing.assert_close(table.weight, expected, rtol=0, atol=1e-7)
    untouched = [0, 2, 5]
    assert torch.equal(table.weight[untouched], before[untouched])  # no weight decay either
    torch.testing.assert_close(table.weight[1], before[1] * (1 - LR * WD) - LR * torch.tensor([-1.0, -1.0, 0.0]))


def test_lookups_accumulate_until_step_and_no_grad_lookups_are_not_recorded():
    table = _table()
    before = table.weight.clone()
    a, b = table.lookup(torch.tensor([2])), table.lookup(torch.tensor([2, 5]))
    (a * torch.tensor([[1.0, 1.0, -1.0]])).sum().backward()
    (b * torch.tensor([[-2.0, 0.5, 0.5], [1.0, 1.0, 1.0]])).sum().backward()
    with torch.no_grad():
        table.lookup(torch.tensor([0]))
    table.step(LR, WD)
    expected = _dense_reference(before, torch.tensor([2, 2, 5]),
                                torch.tensor([[1.0, 1.0, -1.0], [-2.0, 0.5, 0.5], [1.0, 1.0, 1.0]]), LR, WD)
    torch.testing.assert_close(table.weight, expected, rtol=0, atol=1e-7)
    # a second step with nothing recorded changes nothing
    after = table.weight.clone()
    assert table.step(LR, WD).numel() == 0
    assert torch.equal(table.weight, after)


def test_sum_rows_adds_duplicates():
    ids, grads = sum_rows(torch.tensor([4, 1, 4, 4]), torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert ids.tolist() == [1, 4] and grads.flatten().tolist() == [2.0, 8.0]


def test_add_rows_starts_at_the_mean_and_state_dict_round_trips():
    table = _table(num_ids=5, dim=4)
    mean = table.weight.mean(0)
    new = table.add_rows(3)
    assert new == range(5, 8) and table.num_ids == 8
    for i in new:
        torch.testing.assert_close(table.weight[i], mean)
    torch.testing.assert_close(table.lookup(torch.tensor([6])).detach()[0], mean)
    table.zero_grad()
    other = PuzzleEmbedding(1, 4)
    other.load_state_dict(table.state_dict())
    assert torch.equal(other.weight, table.weight)
    other.weight[0] += 1  # a copy, not shared
    assert not torch.equal(other.weight, table.weight)
    assert torch.equal(PuzzleEmbedding(0, 4).mean_row(), torch.zeros(4))


def test_gradient_reaches_the_table_through_the_model():
    cfg = tiny()
    model = build_model(cfg)
    table = PuzzleEmbedding(5, cfg.puzzle_dim)
    ids = torch.tensor([3, 3, 0])
    tokens = torch.randint(0, cfg.vocab, (3, cfg.canvas ** 2))
    _, logits, _ = model(model.initial_carry(3), tokens, table.lookup(ids))
    logits.square().mean().backward()
    table.step(LR, WD)
    assert (table.weight[[0, 3]] != 0).any(dim=1).all()
    assert (table.weight[[1, 2, 4]] == 0).all()
    assert all(p.data_ptr() != table.weight.data_ptr() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Two ranks (gloo, CPU): the same row on both ranks is summed once across ranks before the sign.

RANK_IDS = [torch.tensor([1, 1, 2]), torch.tensor([2, 3])]
RANK_GRADS = [torch.tensor([[1.0, -1.0], [1.0, 2.0], [2.0, 1.0]]), torch.tensor([[-3.0, -0.5], [0.0, 1.0]])]


def _rank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        table = _table(num_ids=5, dim=2)
        rows = table.lookup(RANK_IDS[rank])
        (rows * RANK_GRADS[rank]).sum().backward()
        table.step(LR, WD)
        torch.save(table.weight, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_rows_are_summed_across_ranks(tmp_path):
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    before = _table(num_ids=5, dim=2).weight
    expected = _dense_reference(before, torch.cat(RANK_IDS), torch.cat(RANK_GRADS), LR, WD)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    # row 2 got +2 on rank 0 and -3 on rank 1: the sum (-1) decides, not either rank alone
    assert expected[2, 0] > before[2, 0] * (1 - LR * WD)


def test_host_storage_gives_the_same_table_as_device_storage(tmp_path):
    """Both layouts through real training steps (on a CPU both sit in host memory, but the host
    layout's gather, transfer and scatter path runs); a GPU test measures the device bytes."""
    import dataclasses

    from pretrain.distributed import setup_world
    from pretrain.presets import tiny as tiny_run
    from pretrain.trainer import Trainer

    tables, losses = [], []
    for storage in ("device", "host"):
        config = dataclasses.replace(tiny_run(), steps=4, log_every=1, eval_every=0, checkpoint_every=4,
                                     puzzle_storage=storage)
        config.data = dataclasses.replace(config.data, train_sources=("synthetic:12/0",),
                                          held_out_sources=("synthetic:3/1",))
        trainer = Trainer(config, tmp_path / storage, setup_world("cpu"))
        assert trainer.learner.puzzles.storage == storage
        last = trainer.train()
        tables.append(trainer.learner.puzzles.weight.clone())
        losses.append(last["loss"])
        resumed = Trainer(config, tmp_path / storage, setup_world("cpu"))
        assert resumed.resume() and resumed.learner.puzzles.storage == storage
        assert torch.equal(resumed.learner.puzzles.weight, tables[-1])
    assert tables[0].abs().sum() > 0
    assert torch.equal(tables[0], tables[1]) and losses[0] == losses[1]


def test_storage_is_validated():
    with pytest.raises(ValueError, match="storage"):
        PuzzleEmbedding(4, 2, storage="disk")
