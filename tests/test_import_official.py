"""Importing checkpoints of the official TRM/HRM code, checked against outputs of the official code.

The fixtures (``../shared/fixtures/official`` from the repository root; see its README.md) hold
checkpoints written by the official ``save_train_state``, their configs, input batches and the
official code's outputs in float32 on CPU. The official code itself is not needed.
"""

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from safetensors.torch import load_file

from arc_data import load_bundled
from pretrain.config import ModelConfig
from pretrain.data import SampleBatch
from pretrain.distributed import World
from pretrain.export import ExportError, load_exported
from pretrain.import_official import (PUZZLE_TABLE_FILE, OfficialImportError, import_checkpoint,
                                      is_official_checkpoint, main, project_name)
from pretrain.learner import Learner, OptimConfig, Slots, train_step
from pretrain.model import halt_decision
from pretrain.puzzle_embedding import PuzzleEmbedding
from tests.helpers import OFFICIAL_FIXTURES as FIXTURES
from tests.helpers import call_main, run_cli, write_kaggle_files

pytestmark = [
    pytest.mark.skipif(not (FIXTURES / "README.md").is_file(), reason=f"the official-code fixtures are not at "
                       f"{FIXTURES} (../shared/fixtures/official from the repository root)"),
    pytest.mark.usefixtures("one_thread"),
]

# case -> (folder with case.json, batch.npz and expected.npz; checkpoint file)
CASES = {
    "trm-att-arc": ("trm-att-arc", "trm-att-arc/step_1234"),
    "trm-att-small": ("trm-att-small", "trm-att-small/step_1234"),
    "trm-att-small/uncompiled": ("trm-att-small", "trm-att-small/uncompiled/step_1234"),
    "trm-mlp-small": ("trm-mlp-small", "trm-mlp-small/step_1234"),
    "hrm-small": ("hrm-small", "hrm-small/step_1234"),
}
# 7M parameters at 916 tokens: over a minute of forward passes on one core of a 2-core CPU.
SLOW_CASES = {"trm-att-arc"}


def case_params():
    return [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES]


def case_json(case: str) -> dict:
    return json.loads((FIXTURES / CASES[case][0] / "case.json").read_text())


def sets_of(case: str) -> list[str]:
    args = case_json(case)["import_args"]
    return [value for flag, value in zip(args[::2], args[1::2]) if flag == "--set"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Each case imported once (with its puzzle table), by the function other code calls."""
    done = {}

    def get(case: str) -> Path:
        if case not in done:
            out = tmp_path_factory.mktemp(case.replace("/", "-"))
            import_checkpoint(FIXTURES / CASES[case][1], out, sets=sets_of(case), keep_puzzle_table=True)
            done[case] = out
        return done[case]
    return get


def official_tensors(case: str) -> dict[str, torch.Tensor]:
    state = torch.load(FIXTURES / CASES[case][1], map_location="cpu", weights_only=True)
    return {k.split("model.inner.", 1)[1]: v for k, v in state.items()}


# ---------------------------------------------------------------------------------------------
# What the import writes


@pytest.mark.parametrize("case", list(CASES))
def test_the_model_config_is_the_official_one(case, imported):
    config = ModelConfig.from_dict(orjson.loads((imported(case) / "model.json").read_bytes()))
    for key, value in case_json(case)["expected_model_config"].items():
        ours = config.seq_len if key == "token_mlp_width" else getattr(config, key)
        if key == "token_mlp_inner":
            ours = config.resolved_token_mlp_inner
        assert ours == value, f"{key}: {ours} != {value}"


@pytest.mark.parametrize("case", list(CASES))
def test_tensors_are_the_checkpoints_bit_for_bit(case, imported):
    exported = load_file(str(imported(case) / "model.safetensors"))
    official = official_tensors(case)
    family = "hrm" if case.startswith("hrm") else "trm"
    table = official.pop("puzzle_emb.weights")
    assert len(exported) == len(official) + 1  # + puzzle_mean
    for name, tensor in official.items():
        ours = exported[project_name(name, family)]
        assert ours.dtype == torch.float32
        assert torch.equal(ours, tensor.to(torch.float32)), name
    # The README's mapping, independently of the importer's table: H_init is y (TRM) / z_H (HRM).
    assert torch.equal(exported["y_init"], official["H_init"].float())
    assert torch.equal(exported["z_init"], official["L_init"].float())
    assert torch.equal(exported["embed_tokens"], official["embed_tokens.embedding_weight"])
    expected_mean = np.load(FIXTURES / CASES[case][0] / "expected.npz")["puzzle_mean"]
    np.testing.assert_allclose(exported["puzzle_mean"].numpy(), expected_mean, rtol=0, atol=1e-6)
    kept = load_file(str(imported(case) / PUZZLE_TABLE_FILE))
    assert list(kept) == ["weight"] and torch.equal(kept["weight"], table)
    puzzles = PuzzleEmbedding(1, table.shape[1])
    puzzles.load_state_dict(kept)
    assert torch.equal(puzzles.weight, table)


def test_the_compiled_and_uncompiled_files_import_alike(imported):
    compiled = load_file(str(imported("trm-att-small") / "model.safetensors"))
    uncompiled = load_file(str(imported("trm-att-small/uncompiled") / "model.safetensors"))
    assert compiled.keys() == uncompiled.keys()
    assert all(torch.equal(compiled[k], uncompiled[k]) for k in compiled)


def test_without_the_flag_there_is_no_puzzle_table(tmp_path):
    import_checkpoint(FIXTURES / CASES["hrm-small"][1], tmp_path, sets=sets_of("hrm-small"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


IMPORT_ARGS = [FIXTURES / CASES["trm-att-small/uncompiled"][1], "--set", "seq_len=100",
               "--set", "H_cycles=4", "halt_max_steps=10"]  # both flag forms of --set


def test_the_command_line_import(tmp_path, capsys):
    """The command's ``main``: both flag forms of --set, exit 0, a loadable export."""
    out = tmp_path / "export"
    code, err = run_import(capsys, *IMPORT_ARGS, "--out", out)
    assert code == 0, err
    model, puzzle_mean = load_exported(out)
    assert (model.config.T, model.config.max_steps, model.config.canvas) == (4, 10, 10)
    assert puzzle_mean.shape == (128,)


@pytest.mark.cli
def test_python_m_import_official(tmp_path):
    """The same import as a command: ``python -m pretrain.import_official``."""
    out = tmp_path / "export"
    result = run_cli(["-m", "pretrain.import_official", *IMPORT_ARGS, "--out", out], timeout=120)
    assert result.returncode == 0, result.stderr
    model, puzzle_mean = load_exported(out)
    assert (model.config.T, model.config.max_steps, model.config.canvas) == (4, 10, 10)
    assert puzzle_mean.shape == (128,)


def test_official_checkpoints_are_recognised_by_content(tmp_path, imported):
    for case in ("trm-att-small", "trm-att-small/uncompiled", "hrm-small"):
        assert is_official_checkpoint(FIXTURES / CASES[case][1])
    torch.save({"net.blocks.0.mlp.down.weight": torch.zeros(2)}, tmp_path / "ours.pt")
    (tmp_path / "text").write_text("not a checkpoint")
    for path in (tmp_path / "ours.pt", tmp_path / "text", tmp_path, imported("hrm-small"),
                 imported("hrm-small") / "model.safetensors", tmp_path / "absent"):
        assert not is_official_checkpoint(path), path


# ---------------------------------------------------------------------------------------------
# The imported network computes what the official code computed


def tolerances(case: str) -> list[float]:
    """Per ACT step (the fixtures' README): TRM-MLP amplifies float32 rounding about 5x per step."""
    return [1e-4, 1e-3, 1e-2, 1e-2] if case.startswith("trm-mlp") else [1e-4] * 4


def official_eval(model, table: torch.Tensor, batch, steps: int):
    """The official evaluate(): the same batch every step, the carry threaded, halted slots restarted."""
    inputs = torch.from_numpy(batch["inputs"]).long()
    emb = table[torch.from_numpy(batch["puzzle_identifiers"]).long()]
    B = inputs.shape[0]
    carry = model.initial_carry(B)
    halted, count = torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.long)
    outputs = []
    model.eval()
    with torch.no_grad():
        for _ in range(steps):
            carry = model.reset_carry(carry, halted)
            count = torch.where(halted, 0, count)
            carry, logits, q = model(carry, inputs, emb)
            count = count + 1
            halted = halt_decision(q, count, model.config, training=False)
            outputs.append((logits, q, halted, count))
    return outputs


@pytest.mark.parametrize("case", case_params())
def test_eval_steps_match_the_official_code(case, imported):
    folder = FIXTURES / CASES[case][0]
    batch, expected = np.load(folder / "batch.npz"), np.load(folder / "expected.npz")
    model, _ = load_exported(imported(case), dtype=torch.float32)
    table = load_file(str(imported(case) / PUZZLE_TABLE_FILE))["weight"]
    outputs = official_eval(model, table, batch, case_json(case)["eval_steps"])
    for step, ((logits, q, halted, count), atol) in enumerate(zip(outputs, tolerances(case))):
        where = f"step {step + 1}"
        np.testing.assert_allclose(logits.numpy(), expected["logits"][step], rtol=0, atol=atol, err_msg=where)
        np.testing.assert_allclose(q[:, 0].numpy(), expected["q_halt_logits"][step], rtol=0, atol=atol, err_msg=where)
        np.testing.assert_allclose(q[:, 1].numpy(), expected["q_continue_logits"][step], rtol=0, atol=atol,
                                   err_msg=where)
        np.testing.assert_array_equal(halted.numpy(), expected["halted"][step], err_msg=where)
        np.testing.assert_array_equal(count.numpy(), expected["steps"][step], err_msg=where)


class OneBatch:
    """A sample source that hands out the fixture's batch (labels: the official -100 back to PAD)."""

    def __init__(self, batch):
        labels = np.where(batch["labels"] == -100, 0, batch["labels"])
        self.samples = SampleBatch(batch["inputs"].astype(np.uint8), labels.astype(np.uint8),
                                   batch["puzzle_identifiers"].astype(np.int64))

    def take(self, n: int) -> SampleBatch:
        assert n == len(self.samples)
        return self.samples


@pytest.mark.parametrize("case", case_params())
def test_a_train_step_matches_the_official_loss(case, imported):
    """The project's own train_step on the official batch, halting exploration off as in the fixture."""
    folder = FIXTURES / CASES[case][0]
    batch, expected = np.load(folder / "batch.npz"), np.load(folder / "expected.npz")
    model, _ = load_exported(imported(case), dtype=torch.float32)
    table = load_file(str(imported(case) / PUZZLE_TABLE_FILE))
    B = len(batch["puzzle_identifiers"])
    world = World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
    learner = Learner(model.config.replace(halt_exploration=0.0), OptimConfig(global_batch=B, ema_decay=0.0),
                      table["weight"].shape[0], world, torch.float32, model=model)
    learner.puzzles.load_state_dict(table)
    slots = Slots(model, B, world, model.config.canvas)
    forwards = []
    model.register_forward_hook(lambda module, args, output: forwards.append(output))
    metrics = train_step(learner, slots, OneBatch(batch))

    def close(ours, key):
        np.testing.assert_allclose(float(ours), float(expected[key]), rtol=1e-5, atol=1e-6, err_msg=key)

    close(metrics["loss"], "train_loss")
    close(metrics["lm_loss"], "train_metric_lm_loss")
    close(metrics["q_halt_loss"], "train_metric_q_halt_loss")
    for ours, key in (("count", "count"), ("token_accuracy", "accuracy"), ("exact_accuracy", "exact_accuracy"),
                      ("q_halt_accuracy", "q_halt_accuracy"), ("steps", "steps")):
        close(metrics[ours], f"train_metric_{key}")
    q = forwards[0][2]
    np.testing.assert_allclose(q[:, 0].detach().numpy(), expected["train_q_halt_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(q[:, 1].detach().numpy(), expected["train_q_continue_logits"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(slots.halted.numpy(), expected["train_halted"])
    np.testing.assert_array_equal(slots.steps.numpy(), expected["train_steps"])
    if "train_metric_q_continue_loss" in expected.files:  # HRM: the target from a second forward pass
        close(metrics["q_continue_loss"], "train_metric_q_continue_loss")
        next_q = forwards[1][2]
        target = torch.sigmoid(torch.where(slots.steps >= model.config.max_steps, next_q[:, 0],
                                           next_q.max(-1).values))
        np.testing.assert_allclose(target.numpy(), expected["train_target_q_continue"], rtol=0, atol=1e-5)
    else:
        assert float(metrics["q_continue_loss"]) == 0.0 and len(forwards) == 1


# ---------------------------------------------------------------------------------------------
# Every error: one line, exit status 2, no traceback, nothing written


def run_import(capsys, *argv) -> tuple[int, str]:
    code, _, err = call_main(main, capsys, *argv)
    return code, err


def assert_refused(code: int, stderr: str, out: Path, *words: str) -> None:
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, (word, stderr)
    assert not (out / "model.safetensors").exists()


def small_state() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / CASES["trm-att-small"][1], map_location="cpu", weights_only=True)


SMALL_CONFIG = FIXTURES / "trm-att-small/all_config.yaml"


def test_a_file_that_is_not_a_torch_file(tmp_path, capsys):
    bad = tmp_path / "step_1"
    bad.write_text("arch: trm\n")
    assert_refused(*run_import(capsys, bad, "--config", SMALL_CONFIG, "--out", tmp_path / "o"), tmp_path / "o",
                   "step_1", "not a torch checkpoint")


def test_a_torch_file_that_is_not_a_dict_of_tensors(tmp_path, capsys):
    for name, content in (("a_list", [torch.zeros(2)]), ("a_dict_of_ints", {"model.inner.H_init": 3})):
        torch.save(content, tmp_path / name)
        assert_refused(*run_import(capsys, tmp_path / name, "--config", SMALL_CONFIG, "--set", "seq_len=100",
                                   "--out", tmp_path / "o"), tmp_path / "o", name, "not a")


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    state = small_state()
    state["_orig_mod.model.inner.H_init"] = RunsCode(marker)
    torch.save(state, tmp_path / "step_1")
    assert_refused(*run_import(capsys, tmp_path / "step_1", "--config", SMALL_CONFIG, "--set", "seq_len=100",
                               "--out", tmp_path / "o"), tmp_path / "o", "refused", "system")
    assert not marker.exists()


def test_an_unknown_key(tmp_path, capsys):
    state = small_state()
    state["_orig_mod.model.inner.L_level.layers.0.self_attn.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "step_1")
    assert_refused(*run_import(capsys, tmp_path / "step_1", "--config", SMALL_CONFIG, "--set", "seq_len=100",
                               "--out", tmp_path / "o"), tmp_path / "o", "unknown key", "self_attn.extra.weight")


def test_a_missing_key(tmp_path, capsys):
    state = small_state()
    del state["_orig_mod.model.inner.L_level.layers.1.mlp.down_proj.weight"]
    torch.save(state, tmp_path / "step_1")
    assert_refused(*run_import(capsys, tmp_path / "step_1", "--config", SMALL_CONFIG, "--set", "seq_len=100",
                               "--out", tmp_path / "o"), tmp_path / "o", "missing key",
                   "L_level.layers.1.mlp.down_proj.weight")


@pytest.mark.parametrize("change, words", [
    ("hidden_size=128", ("arch.hidden_size", "128", "64")),
    ("L_layers=2", ("arch.L_layers", "2", "3")),
    ("puzzle_emb_ndim=64", ("arch.puzzle_emb_ndim", "64", "128")),
    ("expansion=8", ("arch.expansion", "512", "256")),
    ("mlp_t=true", ("arch.mlp_t", "true", "false")),
])
def test_a_config_that_disagrees_with_the_tensor_shapes(tmp_path, capsys, change, words):
    code, stderr = run_import(capsys, FIXTURES / CASES["trm-att-small"][1], "--set", "seq_len=100", change,
                              "--out", tmp_path / "o")
    assert_refused(code, stderr, tmp_path / "o", "disagree", *words)


def test_the_sequence_mlp_names_seq_len_when_it_is_not_given(tmp_path, capsys):
    code, stderr = run_import(capsys, FIXTURES / CASES["trm-mlp-small"][1], "--out", tmp_path / "o")
    assert_refused(code, stderr, tmp_path / "o", "seq_len", "916", "116")


def test_bad_flags_and_configs(tmp_path, capsys):
    small = FIXTURES / CASES["trm-att-small"][1]
    (tmp_path / "all_config.yaml").write_text("arch: [unclosed\n")
    lone = tmp_path / "lone" / "step_1"
    lone.parent.mkdir()
    lone.write_bytes(small.read_bytes())
    for argv, words in (
        ([small, "--set", "no_such_key=1"], ("no_such_key",)),
        ([small, "--set", "H_cycles"], ("KEY=VALUE",)),
        ([small, "--set", "H_cycles=three"], ("arch.H_cycles", "integer")),
        ([small, "--set", "seq_len=99"], ("seq_len", "perfect square")),
        ([small, "--set", "pos_encodings=learned"], ("pos_encodings",)),
        ([small, "--config", tmp_path / "all_config.yaml"], ("not valid YAML",)),
        ([lone], ("no all_config.yaml", "--recipe")),
        ([small.parent], ("is a folder", "step_1234")),
        ([small, "--recipe", "nvarc-trm-031"], ("arch.hidden_size", "512", "64")),
        ([small, "--recipe", "nvarc-trm-031", "--config", SMALL_CONFIG], ("not allowed with",)),
        ([small], ("--out",)),
    ):
        out = [] if argv == [small] else ["--out", tmp_path / "o"]
        assert_refused(*run_import(capsys, *argv, *out), tmp_path / "o", *words)


def test_an_error_leaves_an_existing_export_untouched(tmp_path):
    out = tmp_path / "export"
    import_checkpoint(FIXTURES / CASES["hrm-small"][1], out, sets=["seq_len=100"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OfficialImportError):
        import_checkpoint(FIXTURES / CASES["hrm-small"][1], out, sets=["seq_len=100", "hidden_size=32"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left behind


@pytest.mark.cli
def test_the_command_line_error_is_one_line_without_traceback(tmp_path):
    result = run_cli(["-m", "pretrain.import_official", FIXTURES / CASES["trm-mlp-small"][1], "--out", tmp_path / "o"],
                     timeout=120)
    assert_refused(result.returncode, result.stderr, tmp_path / "o", "seq_len")


# ---------------------------------------------------------------------------------------------
# make_submission takes the official file directly


def small_bundled_tasks(count: int):
    """Bundled ARC-AGI-1 evaluation tasks whose grids all fit the small fixtures' 10x10 canvas."""
    fits = [t for t in load_bundled("arc-agi-1", "eval") if max(max(g.shape) for g in t.grids()) <= 10]
    return fits[:count]


def test_make_submission_loads_an_official_checkpoint_file(tmp_path, monkeypatch, imported):
    """What make_submission does with an official file, in this process: the network is the import's,
    and the temporary export is gone once loaded."""
    from make_submission import load_network
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    network = load_network(FIXTURES / CASES["trm-att-small"][1], sets=[["seq_len=100"]])
    assert not network.fresh and network.config.canvas == 10
    model, puzzle_mean = load_exported(imported("trm-att-small"))
    assert network.state.keys() == model.state_dict().keys()
    assert all(torch.equal(network.state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(network.puzzle_mean, puzzle_mean)
    assert not list(tmp_path.iterdir())


@pytest.mark.cli
def test_make_submission_imports_an_official_checkpoint_on_the_fly(tmp_path):
    tasks = small_bundled_tasks(3)
    challenges, solutions = write_kaggle_files(tmp_path, tasks)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "submission.json"
    result = run_cli(["make_submission.py", "--quiet", "--checkpoint", FIXTURES / CASES["trm-att-small"][1],
                      "--set", "seq_len=100", "--challenges", challenges, "--solutions", solutions, "--limit", "2",
                      "--time-limit", "120", "--steps", "3", "--workers", "1", "--out", out],
                     env_extra={"TMPDIR": str(scratch)}, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "starting from the official checkpoint" in result.stdout and "pass@2" in result.stdout
    submission = orjson.loads(out.read_bytes())
    assert sorted(submission) == sorted(t.id for t in tasks[:2])
    predicted = re.search(r"(\d+) tasks predicted", result.stdout)
    assert predicted and int(predicted.group(1)) >= 1, result.stdout  # the imported network ran
    assert not list(scratch.glob("official-import-*"))  # the temporary export is gone


def test_make_submission_rejects_official_flags_without_an_official_checkpoint(imported):
    from make_submission import load_network
    for checkpoint in (None, imported("hrm-small")):
        with pytest.raises(ExportError, match="--set apply only to a checkpoint file of the official"):
            load_network(checkpoint, sets=[["seq_len=100"]])
    with pytest.raises(ExportError, match="arch.hidden_size"):
        load_network(FIXTURES / CASES["hrm-small"][1], sets=[["hidden_size=32"]])
