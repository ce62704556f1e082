"""Seconds per task of test-time fine-tuning and inference: ``python -m submission.bench``.

Runs ``solve_task`` on the first ``--tasks`` tasks of a bundled evaluation set with a preset's
fixed number of steps and views (no time limit), and prints fine-tuning and inference seconds per
task, the peak GPU memory, and the projected time for 240 hidden tasks on Kaggle's 4x L4. The
projection scales a GPU measurement by the ratio of dense bf16 rates (an L4 has about 121 TFLOP/s,
an H100 SXM about 989, so roughly 1/8); on a CPU it is not made.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from arc_data.sources import BUNDLED, load_bundled, load_source
from pretrain.distributed import default_dtype, pick_device
from pretrain.hardware import KAGGLE_GPUS, KAGGLE_TASKS, l4_scale
from submission.config import PRESETS, fresh_model_config
from submission.finetune import Network, solve_shard
from submission.voting import grid_key


def selector_table(tasks, outcomes) -> str:
    """pass@1 and pass@2 (per-task mean) of each selector over the same predictions."""
    lines = []
    for name in outcomes[0].ranked_by:
        scores = {k: np.mean([np.mean([grid_key(truth) in {grid_key(np.array(g, np.uint8)) for g in ranked[:k]}
                                       for truth, ranked in zip(task.test_outputs, outcome.ranked_by[name])])
                              for task, outcome in zip(tasks, outcomes)]) for k in (1, 2)}
        lines.append(f"selector {name}: pass@1 {100 * scores[1]:.1f}%  pass@2 {100 * scores[2]:.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m submission.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--dataset", choices=sorted(BUNDLED), default="arc-agi-2")
    parser.add_argument("--source", help="any task source instead (e.g. synthetic:6/11/colour_map+tile)")
    parser.add_argument("--steps", type=int, help="fine-tuning steps (default: the preset's)")
    parser.add_argument("--shard-tasks", type=int, default=1,
                        help="fine-tune one network jointly on N tasks (same steps per task in total)")
    parser.add_argument("--compare-selectors", action="store_true",
                        help="rank the same predictions with every selector and report pass@1/2 for each")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--checkpoint", help="exported network (default: a fresh one)")
    parser.add_argument("--device")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    dtype = default_dtype(device)
    if args.checkpoint:
        from pretrain.export import load_exported
        model, mean = load_exported(args.checkpoint)
        network = Network(model.config, model.state_dict(), mean, fresh=False)
    else:
        network = Network.fresh_init(fresh_model_config())
    config = dataclasses.replace(PRESETS[args.preset](), max_task_seconds=float("inf"),
                                 compare_selectors=args.compare_selectors)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = []
    tasks = load_source(args.source) if args.source else load_bundled(args.dataset, "eval")
    chosen = tasks[:args.tasks]
    for first in range(0, len(chosen), args.shard_tasks):
        shard = chosen[first:first + args.shard_tasks]
        for task, outcome in zip(shard, solve_shard(shard, network, config, device, float("inf"), dtype)):
            rows.append(outcome)
            print(f"{task.id}: canvas {outcome.canvas}, {outcome.finetune_steps} steps in "
                  f"{outcome.finetune_seconds:.1f} s (shard of {len(shard)}), {outcome.views} views in "
                  f"{outcome.inference_seconds:.1f} s")
    # A shard's fine-tuning is shared by its tasks: count it once per shard.
    finetune = float(np.sum([o.finetune_seconds for o in rows[::args.shard_tasks]])) / len(rows)
    inference = float(np.mean([o.inference_seconds for o in rows]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, {dtype}, preset {args.preset}: per task {finetune:.1f} s fine-tuning "
          f"({config.steps} steps, batch {config.batch}) + {inference:.1f} s inference ({config.views} views)")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if args.compare_selectors:
        print(selector_table(chosen, rows))
    scale = l4_scale(device)
    if scale:
        hours = (finetune + inference) * scale * KAGGLE_TASKS / KAGGLE_GPUS / 3600
        print(f"projected on Kaggle: {KAGGLE_TASKS} tasks on {KAGGLE_GPUS}x L4 ~ {hours:.1f} h "
              f"(this GPU's time x {scale:.1f}, the ratio of dense bf16 rates)")
    else:
        print("projected on Kaggle: not made (needs a measurement on a known GPU)")


if __name__ == "__main__":
    main()
