"""The pipeline's proofs of life: a model that cannot learn these tasks has a bug somewhere.

Both are slow (minutes on a 2-core CPU): ``python -m pytest -m slow tests/test_proof_of_life.py``.
"""

import numpy as np
import pytest
import torch

from arc_data.synthetic import synthetic_tasks
from submission.config import fresh_model_config, synthetic
from submission.finetune import Network, solve_task
from augment.voting import grid_key


@pytest.mark.slow
def test_a_fresh_network_fine_tuned_per_task_solves_simple_tasks():
    """Test-time fine-tuning from scratch on three demonstrations (and their augmented versions)
    must solve a colour map and a tiling on test inputs it never saw."""
    torch.set_num_threads(1)
    network = Network.fresh_init(fresh_model_config())
    config = synthetic()
    for task in synthetic_tasks(2, seed=11, families=("colour_map", "tile")):
        outcome = solve_task(task, network, config, torch.device("cpu"), seconds=float("inf"))
        top_two = {grid_key(np.array(g, np.uint8)) for g in outcome.ranked[0][:2]}
        assert grid_key(task.test_outputs[0]) in top_two, f"{task.id} not solved"


@pytest.mark.slow
def test_the_tiny_preset_learns_held_out_synthetic_tasks(tmp_path):
    """Pretraining the tiny preset on synthetic flips, colour maps and tilings: its held-out tasks
    (demonstrations trained, test inputs never seen) must be solved well above chance."""
    from pretrain.distributed import setup_world
    from pretrain.presets import tiny
    from pretrain.trainer import Trainer

    torch.set_num_threads(1)
    last = Trainer(tiny(), tmp_path, setup_world("cpu")).train()
    assert last["eval/pass@2"] >= 0.5, last
