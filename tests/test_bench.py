import json
import time

import pytest

import bench.submission
import bench.train
from bench.train import network_call_flops, peak_tflops_for, supervision_step_flops
from pretrain.config import ModelConfig, hrm, trm_att, trm_mlp
from augment.voting import RANK_KEYS
from tests.helpers import call_main, run_cli


def small_trm(**changes) -> ModelConfig:
    """hidden 8, 2 heads of 4, SwiGLU inner 16, 1 block, T = 2, n = 1, one prefix token, 2x2 canvas."""
    base = dict(arch="trm", hidden=8, heads=2, mlp_inner=16, layers=1, T=2, n=1, prefix_tokens=1, puzzle_dim=8,
                canvas=2, max_steps=2, forward_dtype="float32")
    return ModelConfig(**{**base, **changes})


def test_trm_flops_match_a_hand_count():
    # batch 1, side 2: L = 1 + 4 = 5 tokens, C = 8, I = 16, H = 2, D = 4, V = 12.
    qkv = 2 * 5 * 8 * 24        # 1920
    out = 2 * 5 * 8 * 8         # 640
    gate_up = 2 * 5 * 8 * 32    # 2560
    down = 2 * 5 * 16 * 8       # 1280
    attention = 2 * 2 * 1 * 2 * 5 * 5 * 4  # 800
    call = qkv + out + gate_up + down + attention
    assert call == 7200
    forward = 2 * (1 + 1) * call     # T (n + 1) = 4 calls
    backward = 2 * (1 + 1) * call    # 2x the last n + 1 = 2 calls
    heads = 3 * (2 * 4 * 8 * 12 + 2 * 8 * 2)  # lm_head over 4 cells, q_head at one position, fwd + bwd
    assert forward + backward + heads == 60_000

    flops = supervision_step_flops(small_trm(), batch=1, side=2)
    assert flops["network_call"] == call
    assert flops["forward"] == forward and flops["backward"] == backward and flops["heads"] == heads
    assert flops["hrm_q_target"] == 0
    assert flops["total"] == 60_000


def test_flops_scale_with_batch_and_layers():
    one = supervision_step_flops(small_trm(), 1, 2)["total"]
    assert supervision_step_flops(small_trm(), 3, 2)["total"] == 3 * one
    assert network_call_flops(small_trm(layers=2), 1, 2) == 2 * network_call_flops(small_trm(), 1, 2)


def test_hrm_flops_match_a_hand_count():
    config = small_trm(arch="hrm")  # T = H_cycles = 2, n = L_cycles = 1
    call = 7200
    heads_forward = 2 * 4 * 8 * 12 + 2 * 8 * 2  # 800
    forward = (2 * 1 + 2) * call  # T n L calls + T H calls
    backward = 2 * (call + call)  # the last L call and the last H call
    q_target = forward + heads_forward  # the second, gradient-free pass
    flops = supervision_step_flops(config, 1, 2)
    assert flops["total"] == forward + backward + 3 * heads_forward + q_target == 89_600


def test_trm_mlp_flops_use_the_sequence_mlp():
    config = small_trm(arch="trm-mlp", token_mlp_inner=6)
    # token mixing over L = 5 for each of the C = 8 channels: 2*8*5*12 + 2*8*6*5; channel MLP as before.
    assert network_call_flops(config, 1, 2) == 2 * 8 * 5 * 12 + 2 * 8 * 6 * 5 + 2560 + 1280
    with pytest.raises(ValueError):
        network_call_flops(trm_mlp(), 1, 16)


def test_paper_trm_is_in_the_plausible_range():
    config = trm_att()
    flops = supervision_step_flops(config, 768, 30)
    # Linear layers: 2 FLOPs per weight per token = 2 * 3,407,872 per block; attention 4 * L * C per token.
    per_token_call = 2 * (2 * 3_407_872 + 4 * 916 * 512)
    assert flops["network_call"] == 768 * 916 * per_token_call
    per_sample = flops["total"] / 768
    # 25 call-equivalents (15 forward + 2 x 5 backward) of ~17.4 MFLOP per token, 916 tokens: ~0.4 TFLOP.
    assert 3.5e11 < per_sample < 4.5e11
    # The paper's run (768 per step, ~518k steps in ~3 days on 4 H100s) then needs ~150 TFLOP/s per GPU:
    # 10-25% of the 989 TFLOP/s bf16 peak, plausible for this small a model.
    per_gpu = flops["total"] * 518_000 / (3 * 86_400) / 4
    assert 0.10 < per_gpu / 989e12 < 0.25
    assert hrm().arch == "hrm" and supervision_step_flops(hrm(), 1, 30)["hrm_q_target"] > 0


def test_peak_table_matches_device_names():
    assert peak_tflops_for("NVIDIA H100 80GB HBM3") == 989
    assert peak_tflops_for("NVIDIA H100 PCIe") == 756
    assert peak_tflops_for("NVIDIA H200") == 989
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312
    assert peak_tflops_for("NVIDIA L4") == 121
    assert peak_tflops_for("NVIDIA L40S") is None
    assert peak_tflops_for("Tesla T4") is None


TRAIN_ARGS = ("--device", "cpu", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--json")


def check_train_rows(stdout: str) -> None:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row["preset"] == "tiny" and row["canvas"] == 10 and row["batch"] == 32 and not row["compile"]
    assert row["steps"] == row["steps_requested"] == 2 and row["first_step_s"] > 0
    assert row["sample_steps_per_s"] > 0 and row["tokens_per_s"] == pytest.approx(row["sample_steps_per_s"] * 104)
    assert row["mfu"] is None and row["memory_kind"].startswith("cpu")


def test_bench_runs_on_cpu_and_prints_json(capsys):
    code, out, err = call_main(bench.train.main, capsys, *TRAIN_ARGS)
    assert code == 0, err
    check_train_rows(out)


@pytest.mark.cli
def test_the_training_benchmark_command_prints_json():
    start = time.perf_counter()
    result = run_cli(["-m", "bench.train", *TRAIN_ARGS], timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    check_train_rows(result.stdout)
    assert seconds < 60, f"took {seconds:.0f} s"


@pytest.mark.usefixtures("one_thread")
def test_small_arc_suite_runs_the_pipeline_and_writes_json(tmp_path, capsys):
    out = tmp_path / "result.json"
    code, stdout, err = call_main(bench.submission.main, capsys, "--suite", "small-arc", "--source",
                                  "synthetic:3/2/colour_map", "--max-side", "5", "--seconds-per-task", "10",
                                  "--workers", "1", "--compare-selectors", "--fresh", "--json", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["tasks"] == 3 and data["outputs"] == 3 and len(data["per_task"]) == 3
    assert data["settings"]["workers"] == 1 and data["settings"]["cpus"] and len(data["settings"]["load_before"]) == 3
    assert data["settings"]["finetune"]["steps"] is None and data["settings"]["network"] == "fresh"
    assert set(data["candidates"]) == {"pass@1", "pass@2", f"pass@{data['K']}"} and set(data["selectors"]) == set(RANK_KEYS)
    assert all(row["steps"] > 0 for row in data["per_task"])
    # pass@2 of the written file agrees with the ranked candidates
    assert data["pass@2_file"]["per_task"] == data["candidates"]["pass@2"]["per_task"]
    row = stdout.strip().splitlines()[-1]
    assert row.startswith("| synthetic:3/2/colour_map, within 5x5 | 3 (3 outputs) | 10 s x 1 workers | fresh | cpu |")


@pytest.mark.slow
def test_small_arc_benchmark_keeps_its_floor(tmp_path):
    """The small benchmark at reduced size: the first 12 ARC-AGI-1 training tasks within 8x8, a fresh
    network, 300 fixed steps per task (so the figure does not depend on the machine's load). The floor
    was set from the preset before its tuning (docs/BENCHMARKS.md: 3 of 16 test outputs among the 16
    candidates, 1 of 16 in the two attempts); the tuned preset passes it too.
    A broken augmentation inversion, selection or fine-tuning falls to 0."""
    out = tmp_path / "result.json"
    result = run_cli(["-m", "bench.submission", "--suite", "small-arc", "--dataset", "arc-agi-1", "--split", "train",
                      "--max-side", "8", "--limit", "12", "--steps", "300", "--seconds-per-task", "600", "--fresh",
                      "--json", out], timeout=3600)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert not data["unfinished"] and all(row["steps"] == 300 for row in data["per_task"])
    assert data["candidates"][f"pass@{data['K']}"]["outputs_hit"] >= 1, result.stdout
