import dataclasses
from pathlib import Path

import orjson
import pytest
import torch

from pretrain import checkpoint
from pretrain.distributed import setup_world
from pretrain.export import export_run, load_exported
from pretrain.presets import tiny
from pretrain.trainer import Trainer
from tests.helpers import run_cli

def short_run(steps, **changes):
    config = tiny()
    settings = {"steps": steps, "log_every": 1, "eval_every": 0, "checkpoint_every": steps, **changes}
    config = dataclasses.replace(config, **settings)
    config.data = dataclasses.replace(config.data, train_sources=("synthetic:24/0",), held_out_sources=("synthetic:6/1",))
    return config


def losses(run_dir):
    return {r["step"]: r["loss"] for r in map(orjson.loads, (Path(run_dir) / "metrics.jsonl").read_bytes().splitlines())
            if "loss" in r}


def test_training_reduces_the_loss(tmp_path):
    trainer = Trainer(short_run(40), tmp_path, setup_world("cpu"))
    trainer.train()
    curve = losses(tmp_path)
    assert sum(curve[s] for s in range(36, 41)) < sum(curve[s] for s in range(1, 6))


def test_resume_continues_the_same_loss_curve(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(short_run(8), straight, setup_world("cpu")).train()
    first = Trainer(short_run(8, checkpoint_every=4), interrupted, setup_world("cpu"))
    first.train(steps=4)
    resumed = Trainer(short_run(8), interrupted, setup_world("cpu"))
    assert resumed.resume() and resumed.learner.step == 4
    resumed.train()
    a, b = losses(straight), losses(interrupted)
    assert [a[s] for s in range(5, 9)] == pytest.approx([b[s] for s in range(5, 9)], rel=1e-6)
    state = checkpoint.load(interrupted / checkpoint.SHARED)
    assert state["learner"]["step"] == 8 and state["config"]["name"] == "tiny"


def logged_lr_factors(run_dir, lr):
    return [r["lr"] / lr for r in map(orjson.loads, (Path(run_dir) / "metrics.jsonl").read_bytes().splitlines())
            if "lr" in r]


def test_a_finished_constant_run_resumes_into_a_linear_cool_down(tmp_path):
    constant = short_run(4)
    constant.optim = dataclasses.replace(constant.optim, lr_warmup_steps=1)
    Trainer(constant, tmp_path, setup_world("cpu")).train()
    cooled = dataclasses.replace(constant, steps=8)
    cooled.optim = dataclasses.replace(constant.optim, lr_cooldown_steps=4)
    resumed = Trainer(cooled, tmp_path, setup_world("cpu"))
    assert resumed.resume()
    resumed.train()
    assert logged_lr_factors(tmp_path, constant.optim.lr) == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    assert resumed.learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.25 * constant.optim.lr)


def test_export_round_trip(tmp_path):
    trainer = Trainer(short_run(3), tmp_path / "run", setup_world("cpu"))
    trainer.train()
    export_run(tmp_path / "run", tmp_path / "export")
    model, mean_row = load_exported(tmp_path / "export")
    ema = trainer.learner.eval_model()
    for (name, a), b in zip(ema.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.allclose(mean_row, trainer.learner.puzzles.mean_row())


@pytest.mark.cli
def test_dry_run_prints_config_and_paper_parameter_count():
    result = run_cli(["-m", "pretrain", "--preset", "trm-arc1", "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert "parameters: 6,829,058" in result.stdout and '"global_batch": 768' in result.stdout


@pytest.mark.cli
def test_two_process_torchrun_matches_one_process(tmp_path):
    common = ["--preset", "tiny", "--steps", "4", "--device", "cpu", "--eval-every", "0", "--checkpoint-every", "4",
              "--train-sources", "synthetic:24/0", "--held-out-sources", "synthetic:6/1"]
    one = run_cli(["-m", "pretrain", *common, "--out", str(tmp_path / "one")], timeout=300)
    assert one.returncode == 0, one.stderr
    two = run_cli(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                   "-m", "pretrain", *common, "--out", str(tmp_path / "two")], timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = checkpoint.load(tmp_path / "one" / checkpoint.SHARED)["learner"]
    b = checkpoint.load(tmp_path / "two" / checkpoint.SHARED)["learner"]
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor, b["model"][name], atol=1e-5), name
    assert torch.allclose(a["puzzles"]["weight"], b["puzzles"]["weight"], atol=1e-6)
    assert list(losses(tmp_path / "one").values()) == pytest.approx(list(losses(tmp_path / "two").values()), rel=1e-4)
    # The closing evaluation is shared by the two ranks and summed: the same scores over all 6 tasks.
    scores = [evaluations(tmp_path / name)[-1] for name in ("one", "two")]
    assert scores[0]["eval/eval_tasks"] == scores[1]["eval/eval_tasks"] == 6
    assert scores[0]["eval/pass@2"] == pytest.approx(scores[1]["eval/pass@2"])


def evaluations(run_dir):
    return [r for r in map(orjson.loads, (Path(run_dir) / "metrics.jsonl").read_bytes().splitlines())
            if "eval/pass@2" in r]


def test_a_gpu_named_under_torchrun_is_ignored_for_the_local_rank():
    from pretrain.distributed import rank_device
    device, note = rank_device(torch.device("cuda", 0), 1, 2)
    assert device == torch.device("cuda", 1) and "ignored under torchrun" in note
    assert rank_device(torch.device("cuda"), 3, 4) == (torch.device("cuda", 3), None)
    assert rank_device(torch.device("cuda", 2), 0, 1) == (torch.device("cuda", 2), None)  # one process: as asked
    assert rank_device(torch.device("cpu"), 1, 2) == (torch.device("cpu"), None)


@pytest.mark.parametrize("arch", ["trm", "trm-mlp", "hrm"])
def test_every_architecture_takes_training_steps(tmp_path, arch):
    config = short_run(3)
    changes = {"arch": arch, "prefix_tokens": 1 if arch == "hrm" else config.model.prefix_tokens}
    config.model = config.model.replace(**changes)
    trainer = Trainer(config, tmp_path, setup_world("cpu"))
    before = [p.detach().clone() for p in trainer.learner.model.parameters()]
    trainer.train()
    assert trainer.learner.step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.learner.model.parameters()))
    assert all(torch.isfinite(v).all() for v in losses(tmp_path).values() for v in [torch.tensor(v)])


def bucketed_run(steps, **changes):
    from arc_data.synthetic import synthetic_tasks
    from pretrain.data import PuzzleCatalogue
    config = short_run(steps, **changes)
    config.model = config.model.replace(pos_encoding="rope2d")
    config.data = dataclasses.replace(config.data, bucket_canvas=True)
    small, large = synthetic_tasks(8, 0, max_side=4), synthetic_tasks(8, 1, max_side=10)
    catalogue = PuzzleCatalogue(small + large[:6], large[6:], 4, 0, canvas=10, bucket_canvas=True)
    return config, catalogue


def test_canvas_bucketing_trains_every_canvas_and_resumes(tmp_path):
    config, catalogue = bucketed_run(10)
    straight = Trainer(config, tmp_path / "straight", setup_world("cpu"), catalogue=catalogue)
    assert straight.canvases == [8, 10]
    straight.train()
    assert all(stream.consumed > 0 for stream in straight.streams.values())
    assert {len(s.inputs[0]) for s in straight.slots.values()} == {64, 100}

    config, catalogue = bucketed_run(10, checkpoint_every=5)
    Trainer(config, tmp_path / "resumed", setup_world("cpu"), catalogue=catalogue).train(steps=5)
    resumed = Trainer(config, tmp_path / "resumed", setup_world("cpu"), catalogue=catalogue)
    assert resumed.resume()
    resumed.train()
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [a[s] for s in range(6, 11)] == pytest.approx([b[s] for s in range(6, 11)], rel=1e-6)


def test_bucketing_needs_two_dimensional_positions(tmp_path):
    config, catalogue = bucketed_run(2)
    config.model = config.model.replace(pos_encoding="rope1d")
    with pytest.raises(ValueError, match="rope2d"):
        Trainer(config, tmp_path, setup_world("cpu"), catalogue=catalogue)
