"""Deep Improvement Supervision (``OptimConfig.improvement_targets``): each supervision step's target,
the training loop that uses them (fixed steps, the targets in the loss, resumable), and the commands."""

import dataclasses
import math

import orjson
import pytest
import torch

import pretrain.learner as learner_module
from arc_data.encoding import PAD
from arc_data.synthetic import synthetic_tasks
from pretrain.distributed import setup_world
from pretrain.losses import improvement_targets
from pretrain.trainer import Trainer
from submission.config import cpu, fresh_model_config
from submission.finetune import Network, solve_task
from tests.helpers import run_cli
from tests.test_training import losses, short_run

MAX_STEPS = 4


def random_pairs(seed=0, batch=4, cells=900):
    """Inputs and answers of random tokens, the answer PAD (ignored) on about a tenth of the cells."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 12, (batch, cells), generator=g)
    labels = torch.randint(2, 12, (batch, cells), generator=g)
    labels[torch.rand(batch, cells, generator=g) < 0.1] = PAD
    return inputs, labels, torch.rand(batch, cells, generator=g)


def targets_at(step, inputs, labels, reveal, max_steps=MAX_STEPS):
    return improvement_targets(inputs, labels, reveal, torch.full((len(inputs),), step), max_steps)


def test_each_step_turns_its_share_of_the_changed_cells_and_keeps_the_earlier_ones():
    inputs, labels, reveal = random_pairs()
    changed = (inputs != labels) & (labels != PAD)
    turned_before = torch.zeros_like(changed)
    for step in range(1, MAX_STEPS + 1):
        target = targets_at(step, inputs, labels, reveal)
        assert bool(((target == inputs) | (target == labels)).all())  # every cell is the input's or the answer's
        turned = changed & (target == labels)
        assert bool((turned | ~turned_before).all())  # nothing turned back
        share = turned.sum(-1).float() / changed.sum(-1)
        assert share.tolist() == pytest.approx([step / MAX_STEPS] * len(inputs), abs=0.05)
        assert bool((target[labels == PAD] == PAD).all())  # outside the answer: ignored at every step
        turned_before = turned
    assert torch.equal(targets_at(MAX_STEPS, inputs, labels, reveal), labels)


def test_one_supervision_step_trains_on_the_answer_itself():
    inputs, labels, reveal = random_pairs(seed=1)
    assert torch.equal(targets_at(1, inputs, labels, reveal, max_steps=1), labels)


def dis_run(steps, max_steps=3, **changes):
    config = short_run(steps, **changes)
    config.model = config.model.replace(max_steps=max_steps)
    config.optim = dataclasses.replace(config.optim, improvement_targets=True)
    return config


def logged(run_dir, key):
    return [r[key] for r in map(orjson.loads, (run_dir / "metrics.jsonl").read_bytes().splitlines()) if key in r]


def test_every_sample_takes_all_its_steps_without_learned_halting(tmp_path):
    config = dis_run(9)
    trainer = Trainer(config, tmp_path, setup_world("cpu"))
    with torch.no_grad():  # a halting head that wants to halt at once: learned halting would end samples early
        trainer.learner.model.q_head.bias.fill_(5.0)
    trainer.train()
    batch = config.optim.global_batch
    # All slots start together and halt together, after their third step: the metrics count them then.
    assert logged(tmp_path, "count") == [0, 0, batch] * 3
    assert [s for s, c in zip(logged(tmp_path, "steps"), logged(tmp_path, "count")) if c] == [3.0] * 3


def test_the_loss_of_each_step_is_taken_against_that_steps_target(tmp_path, monkeypatch):
    seen = []
    real_terms = learner_module.act_loss_terms

    def recording(logits, labels, *args, **kwargs):
        seen.append(labels.clone())
        return real_terms(logits, labels, *args, **kwargs)

    monkeypatch.setattr(learner_module, "act_loss_terms", recording)
    trainer = Trainer(dis_run(3), tmp_path, setup_world("cpu"))
    trainer.train()
    slots = trainer.slots[trainer.canvases[0]]  # the same samples for all three steps
    for step, labels in enumerate(seen, start=1):
        expected = improvement_targets(slots.inputs, slots.labels, slots.reveal, torch.full((len(labels),), step), 3)
        assert torch.equal(labels, expected), step
    assert torch.equal(seen[-1], slots.labels.long())
    assert not torch.equal(seen[0], seen[-1])


def test_a_run_with_improvement_targets_resumes_on_the_same_curve(tmp_path):
    """Stopped at step 4, inside the second sample's three steps: the draws that order its cells must
    come back with the checkpoint, and the generator must go on from where it was."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(dis_run(8), straight, setup_world("cpu")).train()
    Trainer(dis_run(8, checkpoint_every=4), interrupted, setup_world("cpu")).train(steps=4)
    resumed = Trainer(dis_run(8), interrupted, setup_world("cpu"))
    assert resumed.resume()
    resumed.train()
    a, b = losses(straight), losses(interrupted)
    assert [a[s] for s in range(5, 9)] == pytest.approx([b[s] for s in range(5, 9)], rel=1e-6)


def test_a_run_without_them_does_not_resume_with_them(tmp_path):
    official = short_run(2)
    official.model = official.model.replace(max_steps=3)
    Trainer(official, tmp_path, setup_world("cpu")).train()
    with pytest.raises(ValueError, match="without improvement targets"):
        Trainer(dis_run(4), tmp_path, setup_world("cpu")).resume()


def test_fine_tuning_with_improvement_targets_takes_its_steps():
    torch.set_num_threads(1)
    network = Network.fresh_init(fresh_model_config().replace(max_steps=2))
    task = synthetic_tasks(1, seed=3, families=("colour_map",))[0]
    config = dataclasses.replace(cpu(), steps=4, views=2, improvement_targets=True)
    solved = solve_task(task, network, config, torch.device("cpu"), math.inf)
    assert solved.finetune_steps == 4 and solved.ranked


def test_the_command_line_refuses_a_bad_step_count_in_one_line(capsys):
    from pretrain.__main__ import main
    assert main(["--preset", "tiny", "--max-steps", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_steps" in err[0]


def test_the_command_line_sets_the_option(capsys):
    from pretrain.__main__ import main
    assert main(["--preset", "tiny", "--max-steps", "6", "--improvement-targets", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert '"improvement_targets": true' in printed and '"max_steps": 6' in printed


@pytest.mark.cli
def test_two_processes_draw_the_same_targets_as_one(tmp_path):
    common = ["--preset", "tiny", "--steps", "4", "--device", "cpu", "--eval-every", "0", "--checkpoint-every", "4",
              "--train-sources", "synthetic:24/0", "--held-out-sources", "synthetic:6/1",
              "--max-steps", "3", "--improvement-targets"]
    one = run_cli(["-m", "pretrain", *common, "--out", str(tmp_path / "one")], timeout=300)
    assert one.returncode == 0, one.stderr
    two = run_cli(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29534",
                   "-m", "pretrain", *common, "--out", str(tmp_path / "two")], timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert list(losses(tmp_path / "one").values()) == pytest.approx(list(losses(tmp_path / "two").values()), rel=1e-4)
