"""Training curves from ``metrics.jsonl``, drawn with matplotlib (no display needed)."""

from __future__ import annotations

from pathlib import Path

import orjson

PANELS = (("loss", "loss"), ("exact_accuracy", "exact accuracy (halted samples)"), ("steps", "mean halting steps"),
          ("eval/pass@2", "held-out pass@2"))


def plot_curves(metrics_path: Path, out_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [orjson.loads(line) for line in Path(metrics_path).read_bytes().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, (key, title) in zip(axes, PANELS):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.tight_layout()
    tmp = Path(out_path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out_path)
