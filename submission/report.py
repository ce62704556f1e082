"""Pictures of a scored submission: one PNG per task and an ``index.html``, failures first.

Each PNG has a row per demonstration pair (input, output) and a row per test input (input,
attempt_1, attempt_2, truth), each attempt titled hit or miss. The index lists the drawn tasks
worst first, so what the model gets wrong is at the top of the page.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from arc_data.tasks import Task
from submission.scoring import Score
from submission.writer import ATTEMPT_KEYS

# The standard ARC colours 0..9: black, blue, red, green, yellow, grey, magenta, orange, light blue, maroon.
PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
COLOURS = ListedColormap(PALETTE)
DEFAULT_LIMIT = 200
PANEL_INCHES = 2.2
TITLE_INCHES = 0.45
DPI = 80
COLUMNS = 2 + len(ATTEMPT_KEYS)  # test rows: input, the attempts, truth
HIT, MISS = "#1a7f37", "#cf222e"


def draw_task(task: Task, entries: Sequence[Mapping[str, list[list[int]]]], path: Path | str) -> None:
    """Draw ``task`` with the attempts of its submission ``entries`` (one per test input) as a PNG."""
    rows = len(task.train) + len(task.test_inputs)
    height = rows * PANEL_INCHES + TITLE_INCHES
    figure = Figure(figsize=(COLUMNS * PANEL_INCHES, height), dpi=DPI)
    FigureCanvasAgg(figure)
    # Fixed margins rather than tight_layout, and only the panels drawn: both cost the most time.
    cells = figure.add_gridspec(rows, COLUMNS, left=0.03, right=0.97, bottom=0.02,
                                top=1 - TITLE_INCHES / height, hspace=0.3, wspace=0.15)

    def panel(row: int, column: int, grid: np.ndarray, title: str, *, colour: str = "black") -> None:
        _draw_grid(figure.add_subplot(cells[row, column]), grid, title, colour)

    for row, (grid_in, grid_out) in enumerate(task.train):
        panel(row, 0, grid_in, f"demo {row + 1} input")
        panel(row, 1, grid_out, "\u2192 output")
    truths = task.test_outputs or (None,) * len(task.test_inputs)
    for index, (test_input, entry, truth) in enumerate(zip(task.test_inputs, entries, truths)):
        row = len(task.train) + index
        panel(row, 0, test_input, f"test {index + 1} input")
        for column, key in enumerate(ATTEMPT_KEYS, start=1):
            attempt = np.asarray(entry[key], dtype=np.uint8)
            if truth is None:
                panel(row, column, attempt, key)
            else:
                hit = np.array_equal(attempt, truth)
                panel(row, column, attempt, f"{key}: {'hit' if hit else 'miss'}", colour=HIT if hit else MISS)
        if truth is not None:
            panel(row, COLUMNS - 1, truth, "truth")
    figure.suptitle(task.id, y=1 - 0.15 * TITLE_INCHES / height)
    _replace(Path(path), lambda temp: figure.savefig(temp, format="png"))


def _draw_grid(ax, grid: np.ndarray, title: str, colour: str) -> None:
    """One grid as coloured cells with thin grid lines, row 0 at the top."""
    ax.pcolormesh(grid, cmap=COLOURS, vmin=-0.5, vmax=9.5, edgecolors="#555555", linewidth=0.4)
    ax.set_xlim(0, grid.shape[1])
    ax.set_ylim(grid.shape[0], 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({grid.shape[0]}\u00d7{grid.shape[1]})", fontsize=9, color=colour)


def write_report(tasks: Sequence[Task], submission: Mapping[str, list], score: Score, out_dir: Path | str, *,
                 limit: int = DEFAULT_LIMIT) -> Path:
    """Draw the ``limit`` worst-scoring tasks of ``score`` into ``out_dir``, then write its ``index.html``.

    ``tasks`` must hold every scored task with its demonstrations; ``submission`` is the scored one.
    Returns the index path. The index is written last, so it only names pictures already on disk.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    by_id = {task.id: task for task in tasks}
    missing = [t.task_id for t in score.per_task if t.task_id not in by_id]
    if missing:
        raise ValueError(f"task {missing[0]} was scored but is not among the tasks to draw")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Worst first; sorted() is stable, so equal scores keep the scoring order.
    ranked = sorted(score.per_task, key=lambda t: t.fraction)
    drawn = ranked[:limit]
    for task_score in drawn:
        draw_task(by_id[task_score.task_id], submission[task_score.task_id], out_dir / f"{task_score.task_id}.png")
    index = out_dir / "index.html"
    page = _index_html(score, drawn, len(ranked) - len(drawn))
    _replace(index, lambda temp: Path(temp).write_text(page, encoding="utf-8"))
    return index


def _index_html(score: Score, drawn: Sequence, left_out: int) -> str:
    failed = sum(t.fraction < 1 for t in score.per_task)
    lines = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>ARC submission report</title>',
             "<style>body{font-family:sans-serif} .fail{color:%s} .pass{color:%s} img{max-width:100%%}</style>"
             % (MISS, HIT),
             "</head><body>", "<h1>ARC submission report</h1>",
             f"<p>pass@2 {100 * score.pass_at_2:.2f}% ({score.task_points:.2f} of {score.tasks} tasks); "
             f"{failed} tasks not fully solved; {score.hits} of {score.outputs} test outputs hit.</p>"]
    for t in drawn:
        name = html.escape(t.task_id)
        status = "pass" if t.fraction == 1 else "fail"
        lines += [f'<section id="{name}"><h2 class="{status}">{name}: score {t.fraction:.2f} '
                  f"({t.hits} of {t.outputs} outputs)</h2>",
                  f'<img src="{html.escape(quote(t.task_id))}.png" alt="{name}" loading="lazy"></section>']
    if left_out:
        lines.append(f"<p>{left_out} more tasks not drawn (raise --report-limit).</p>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def _replace(path: Path, write) -> None:
    """Call ``write`` on a temporary name beside ``path``, then rename it over ``path``."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
