"""The network's optimizer: AdamATan2 (the official recipe's) or Muon for the blocks' matrices."""

import dataclasses

import pytest
import torch

from pretrain.config import OptimConfig, tiny
from pretrain.distributed import setup_world
from pretrain.learner import Optimizers, build_optimizer
from pretrain.model import build_model
from pretrain.trainer import Trainer
from tests.test_training import losses, short_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_muon_takes_the_blocks_matrices_and_adam_atan2_the_rest():
    model = build_model(tiny())
    optimizer = build_optimizer(model, OptimConfig(optimizer="muon"))
    assert isinstance(optimizer, Optimizers)
    muon, adam = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon)
    in_muon = {id(p) for group in muon.param_groups for p in group["params"]}
    in_adam = {id(p) for group in adam.param_groups for p in group["params"]}
    blocks = {id(p) for p in model.net.parameters() if p.ndim == 2}
    assert in_muon == blocks
    assert in_muon | in_adam == {id(p) for p in model.parameters()} and not in_muon & in_adam
    assert id(model.embed_tokens) in in_adam and id(model.lm_head.weight) in in_adam


def test_the_default_optimizer_is_the_official_recipes():
    assert type(build_optimizer(build_model(tiny()), OptimConfig())).__name__ == "AdamAtan2"
    with pytest.raises(ValueError, match="optimizer must be one of"):
        OptimConfig(optimizer="sgd")


def muon_run(steps, **changes):
    config = short_run(steps, **changes)
    config.optim = dataclasses.replace(config.optim, optimizer="muon", lr=3e-3)
    return config


def test_muon_reduces_the_loss_and_resumes_on_the_same_curve(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(muon_run(40), straight, setup_world("cpu")).train()
    curve = losses(straight)
    assert sum(curve[s] for s in range(36, 41)) < sum(curve[s] for s in range(1, 6))
    first = Trainer(muon_run(40, checkpoint_every=20), interrupted, setup_world("cpu"))
    first.train(steps=20)
    resumed = Trainer(muon_run(40), interrupted, setup_world("cpu"))
    assert resumed.resume() and resumed.learner.step == 20
    resumed.train(steps=24)
    again = losses(interrupted)
    assert [again[s] for s in range(21, 25)] == pytest.approx([curve[s] for s in range(21, 25)], rel=1e-5)
