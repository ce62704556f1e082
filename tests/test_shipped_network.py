"""The small pretrained network shipped with the code: make_submission's default start, a network that
learned ARC, and one that never saw an evaluation task."""

import numpy as np
import pytest
import torch

import make_submission
from arc_data.encoding import COLOUR_OFFSET, encode_grid
from arc_data.sources import load_bundled, load_source
from pretrain.export import load_exported, pretrained_tasks, read_pretraining_record
from pretrain.model import build_model
from submission.config import SHIPPED_NETWORK, fresh_model_config

CANVAS = 12  # holds every grid within 10x10 with its EOS row and column
HELD_OUT = "bundled:arc-agi-1/train,max-side=10,minus=bundled:arc-agi-1/eval,part=0/8"


def test_make_submission_starts_from_the_shipped_network_unless_told_otherwise(tmp_path):
    default = make_submission.resolve(make_submission.parse_args(["--out", str(tmp_path / "s.json")]))
    assert default.checkpoint == SHIPPED_NETWORK
    fresh = make_submission.resolve(make_submission.parse_args(["--fresh", "--out", str(tmp_path / "s.json")]))
    assert fresh.checkpoint is None
    other = make_submission.resolve(make_submission.parse_args(["--checkpoint", str(tmp_path)]))
    assert other.checkpoint == tmp_path


def test_the_shipped_network_loads_as_a_pretrained_network_of_the_fresh_networks_shape():
    network = make_submission.load_network(SHIPPED_NETWORK)
    assert not network.fresh and network.can_bucket
    fresh = build_model(fresh_model_config()).state_dict()
    assert {k: v.shape for k, v in network.state.items()} == {k: v.shape for k, v in fresh.items()}


def test_fresh_and_checkpoint_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_submission.parse_args(["--fresh", "--checkpoint", str(tmp_path)])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["arc-agi-1", "arc-agi-2"])
def test_the_shipped_network_never_saw_an_evaluation_task(dataset):
    record = read_pretraining_record(SHIPPED_NETWORK)
    assert record is not None and len(record.task_ids) > 100
    assert pretrained_tasks(record, load_bundled(dataset, "eval")) == []


def test_scoring_it_on_its_own_training_tasks_is_refused_and_fresh_is_the_way_out(tmp_path, capsys):
    out = tmp_path / "s.json"
    args = ["--quiet", "--dataset", "arc-agi-1", "--split", "train", "--max-side", "5", "--out", str(out)]
    assert make_submission.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was pretrained on" in err and "--fresh" in err
    assert not out.exists()


def output_token_accuracy(model, puzzle_row, tasks) -> float:
    """Share of the output cells predicted right on the tasks' demonstrations, with no fine-tuning."""
    hits = total = 0
    for task in tasks:
        inputs = torch.from_numpy(np.stack([encode_grid(x, CANVAS) for x, _ in task.train]))
        targets = np.stack([encode_grid(y, CANVAS) for _, y in task.train])
        emb = puzzle_row.expand(len(inputs), -1)
        carry = model.initial_carry(len(inputs), "cpu", side=CANVAS)
        with torch.no_grad():
            for _ in range(model.config.max_steps):
                carry, logits, _ = model(carry, inputs, emb)
        predicted = logits.argmax(-1).numpy()
        cells = targets >= COLOUR_OFFSET  # the output's own cells, not the padding and EOS around it
        hits += int((predicted[cells] == targets[cells]).sum())
        total += int(cells.sum())
    return hits / total


def test_the_shipped_network_learned_arc_where_a_fresh_one_did_not(one_thread):
    """On training tasks held out of its pretraining, the shipped network already predicts most output
    cells of the demonstrations before any fine-tuning; a fresh network of the same shape does not."""
    tasks = load_source(HELD_OUT)[:8]
    model, puzzle_mean = load_exported(SHIPPED_NETWORK)
    fresh = build_model(fresh_model_config())
    shipped_accuracy = output_token_accuracy(model.eval(), puzzle_mean, tasks)
    fresh_accuracy = output_token_accuracy(fresh.eval(), torch.zeros_like(puzzle_mean), tasks)
    assert shipped_accuracy > 0.5 > 0.2 > fresh_accuracy, (shipped_accuracy, fresh_accuracy)
