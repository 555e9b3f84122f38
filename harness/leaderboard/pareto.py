"""Pareto figures of a track: each entry a point (cost, quality), the entries no other entry beats on both
axes joined by a line. Written as PNG (for the site) and PDF (for papers)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.reporting.figures import MARKERS, new_figure, plain_text, print_styled, save_figure

# figure name -> (run kind, run_info key on x (lower is cheaper), metric on y)
PARETO_AXES = {
    "rfid-vs-bits": ("tokenizer", "bits_per_image", "rfid"),
    "gfid-vs-parameters": ("generator", "parameters", "gfid"),
    "psnr-vs-tokens": ("tokenizer", "tokens", "psnr"),
}


def pareto_front(points: Mapping[str, tuple[float, float]], higher_is_better: bool) -> list[str]:
    """The labels of the points that no other point beats on both axes (x: lower is better), by x."""
    def beats(a, b):
        better_y = a[1] >= b[1] if higher_is_better else a[1] <= b[1]
        strictly = a[0] < b[0] or (a[1] > b[1] if higher_is_better else a[1] < b[1])
        return a[0] <= b[0] and better_y and strictly
    front = [k for k, p in points.items() if not any(beats(q, p) for j, q in points.items() if j != k)]
    return sorted(front, key=lambda k: points[k])


@print_styled
def plot_pareto(points: Mapping[str, tuple[float, float]], x_label: str, y_label: str, higher_is_better: bool,
                path: str | Path) -> list[Path]:
    fig, (ax,) = new_figure(1)
    for i, (label, (x, y)) in enumerate(points.items()):
        ax.plot([x], [y], MARKERS[i % len(MARKERS)], color=f"C{i % 10}", label=plain_text(label))
    front = pareto_front(points, higher_is_better)
    ax.plot([points[k][0] for k in front], [points[k][1] for k in front], "-", color="0.5", lw=0.8, zorder=0,
            label="Pareto front")
    arrow = "↑" if higher_is_better else "↓"
    ax.set(xlabel=plain_text(x_label.replace("_", " ")), ylabel=f"{plain_text(y_label)} {arrow}",
           title=f"{plain_text(y_label)} against {plain_text(x_label.replace('_', ' '))}")
    if max(p[0] for p in points.values()) > 20 * max(min(p[0] for p in points.values()), 1e-12):
        ax.set_xscale("log")
    ax.legend(loc="best", frameon=False, fontsize=6)
    return save_figure(fig, path)
