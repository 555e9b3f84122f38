"""Figures for papers and reports (matplotlib, Agg): every figure is written as PDF and PNG.

- entropy per position (VCQ paper Fig. 2(a)): H(x_t | x_<t) and the remaining budget log2 N -
  sum H, one line per tokenizer, the empirical t* (dashed) and the bound t* (dotted) marked;
- codebook usage against codebook size, one line per tokenizer family;
- progressive reconstruction: each ``progressive_<metric>`` against the fraction of tokens kept
  (k / k_total: channels, positions and factors on one axis), one line per run;
- VCQ K_t schedules (log2 K_t per position) and their cumulative capacity against log2 N.

Sized for print (a 7 inch wide two-panel figure or a 3.5 inch single panel at 8-9 pt, TrueType
fonts embedded in the PDF, distinct markers as well as colours). ``render_figures(df, out_dir)``
draws whichever of them the results rows support; ``vqbench report`` and suites call it after the
tables. Result-row conventions read here:

- progressive rows: metric ``progressive_<name>``, ``extra`` with ``k`` and ``k_total`` (and ``unit``);
- entropy curve rows (``vqbench analyze entropy ... --results``): metric ``cond_entropy_bits``, one row
  per position, ``extra`` with ``k`` (the 0-based position t), ``codebook_size`` (K_t),
  ``threshold_bits`` and ``distinct_prefixes``; N is ``n_images``;
- codebook usage: canonical ``codebook_usage`` rows; the codebook size is ``extra["codebook_size"]``
  when a row has it, else the preset's layout (rows whose run overrode the codebook size must carry it).

Text from the data (run ids, presets, families, metric and protocol names in labels, titles and
legend entries) goes through ``plain_text``: its ``$`` are escaped so it never reaches matplotlib's
mathtext parser (a run named ``a$b$c`` or ``$\\frac{`` is drawn as written), and LaTeX rendering
(``text.usetex``) is off whatever the user's matplotlibrc says.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from harness.evaluation.entropy import EntropyProfile, profiles_from_rows  # noqa: F401 (re-exported for figures' readers)
from harness.core.results import row_extra

ENTROPY_CURVE_METRIC = "cond_entropy_bits"
PROGRESSIVE_PREFIX = "progressive_"
FULL_WIDTH, HALF_WIDTH, HEIGHT = 7.0, 3.5, 2.8        # inches
LEGEND_INSIDE_MAX, LEGEND_ROW_HEIGHT = 4, 0.2       # runs a legend inside the axes can hold; inches per row below
MARKERS = "osD^vP*Xh<>p"
STYLE = {"font.size": 9, "axes.labelsize": 9, "axes.titlesize": 9, "legend.fontsize": 7.5,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "lines.linewidth": 1.5, "lines.markersize": 4,
         "axes.grid": True, "grid.alpha": 0.3, "pdf.fonttype": 42, "ps.fonttype": 42,
         "savefig.pad_inches": 0.03, "text.usetex": False}


def plain_text(text) -> str:
    """``text`` (a run id, a preset, a metric name: anything from the rows) as a matplotlib label that
    shows it as written: ``$`` escaped so mathtext never parses it (an unescaped ``\\`` is literal outside
    math), and a leading ``_`` kept visible (matplotlib leaves such labels out of legends)."""
    text = str(text).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def new_figure(ncols: int, width: float | None = None):
    """A figure with ``ncols`` axes, built without pyplot (no global backend or state)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width or (FULL_WIDTH if ncols > 1 else HALF_WIDTH), HEIGHT), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write ``path`` as .pdf and .png (300 dpi), each atomically; returns both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from harness.core.io import write_atomic
    FigureCanvasAgg(fig)
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix.lower() in (".pdf", ".png") else stem
    out = []
    for ext in ("pdf", "png"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=300)
        out.append(stem.parent / f"{stem.name}.{ext}")
        write_atomic(out[-1], buffer.getvalue())  # a full disk, a read-only folder: one line naming the file
    return out


def print_styled(draw):
    """Run a drawing function under the print style."""
    def wrapper(*args, **kwargs):
        import matplotlib
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__ = draw.__name__, draw.__doc__
    return wrapper


# ------------------------------------------------------------------------------------------------ entropy
@print_styled
def plot_entropy_profiles(profiles: Mapping[str, EntropyProfile], path: str | Path) -> list[Path]:
    """H_t and the remaining budget per position for each labelled profile, t* marked (module docstring)."""
    if not profiles:
        raise ValueError("plot_entropy_profiles needs at least one profile")
    fig, (ax_h, ax_b) = new_figure(2)
    # show every position that still carries information, and a few after the last cliff
    last = max(max([0, *np.flatnonzero(p.conditional_entropy > 1e-3)]) for p in profiles.values())
    marks = [m for p in profiles.values() for m in (p.t_star, p.bound_t_star or 0)]
    shown = min(max(p.num_positions for p in profiles.values()), max(last + 3, max(marks) + 3, 8))
    for i, (label, p) in enumerate(profiles.items()):
        t = np.arange(min(shown, p.num_positions))
        color, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        bound = p.bound_t_star
        name = f"{plain_text(label)} (t* = {p.t_star}" + (f", bound {bound})" if bound is not None else ")")
        ax_h.plot(t, p.conditional_entropy[t], color=color, marker=marker, label=name)
        ax_b.plot(t, p.remaining_budget[t], color=color, marker=marker, label=plain_text(label))
        ax_b.plot(t, np.maximum(p.capacity_budget[t], 0), color=color, linestyle=":", linewidth=1.0)
        for ax in (ax_h, ax_b):
            ax.axvline(p.t_star, color=color, linestyle="--", linewidth=1.0)
            if bound is not None and bound < shown:
                ax.axvline(bound, color=color, linestyle=":", linewidth=1.0)
    ax_h.set(xlabel="position t", ylabel=r"$H(x_t \mid x_{<t})$ [bits]", title="conditional entropy per position")
    ax_b.set(xlabel="position t", ylabel=r"$\log_2 N - \Sigma_{s \leq t} H_s$ [bits]", title="remaining information budget")
    styles = [ax_b.plot([], [], color="gray", linestyle=":", linewidth=1.0, label=r"full-codebook capacity / bound $t^*$")[0],
              ax_b.plot([], [], color="gray", linestyle="--", linewidth=1.0, label=r"empirical $t^*$")[0]]
    if len(profiles) <= LEGEND_INSIDE_MAX:
        ax_h.legend(loc="upper right", frameon=False)
        ax_b.legend(loc="upper right", frameon=False)
    else:   # many runs: inside the axes the legend would hide the curves; one shared legend below them
        ncol = 2      # labels carry run ids and t*: three columns overflow the page width
        fig.set_figheight(HEIGHT + LEGEND_ROW_HEIGHT * math.ceil(len(profiles) / ncol))
        fig.legend(*ax_h.get_legend_handles_labels(), loc="outside lower center", ncol=ncol, frameon=False)
        ax_b.legend(handles=styles, loc="upper right", frameon=False)
    for ax in (ax_h, ax_b):
        ax.set_xlim(-0.5, shown - 0.5)
        ax.set_ylim(bottom=0)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ usage
def run_info(row) -> dict:
    """The run's self-description a row carries (harness.evaluation.recording.run_info); {} for old rows."""
    return row_extra(row).get("run_info") or {}


def usage_points(df) -> dict[str, list[tuple[int, float]]]:
    """{family: [(codebook size, usage), ...]} from canonical ``codebook_usage`` rows."""
    rows = df[(df["metric"] == "codebook_usage") & (df["protocol"].fillna("canonical").replace("", "canonical")
                                                   == "canonical")]
    points: dict[str, list[tuple[int, float]]] = {}
    for _, r in rows.iterrows():
        extra = row_extra(r)
        size = extra.get("codebook_size") or run_info(r).get("codebook_size")
        if size and math.isfinite(r["value"]):
            points.setdefault(str(r["model"]), []).append((int(size), float(r["value"])))
    return {k: sorted(v) for k, v in points.items()}


@print_styled
def plot_codebook_usage(points: Mapping[str, Sequence[tuple[int, float]]], path: str | Path) -> list[Path]:
    """Codebook usage (fraction of codes used) against codebook size, one line per family."""
    fig, (ax,) = new_figure(1)
    for i, (family, pts) in enumerate(points.items()):
        sizes, usage = zip(*pts)
        ax.plot(sizes, usage, color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], label=plain_text(family))
    ax.set_xscale("log", base=2)
    ax.set(xlabel="codebook size K", ylabel="codebook usage", ylim=(0, 1.05), title="codebook usage vs size")
    ax.legend(loc="lower left", frameon=False)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ progressive
def progressive_curves(df) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{metric: {run label: [(k / k_total, value), ...]}} from ``progressive_*`` rows."""
    rows = df[df["metric"].astype(str).str.startswith(PROGRESSIVE_PREFIX)]
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for _, r in rows.iterrows():
        extra = row_extra(r)
        if "k" not in extra or not extra.get("k_total") or not math.isfinite(r["value"]):
            continue
        metric = r["metric"] + ("" if r["protocol"] in ("", "canonical", None) else f" [{r['protocol']}]")
        label = f"{r['run_id']} ({extra.get('unit', 'tokens')})"
        curves.setdefault(metric, {}).setdefault(label, []).append((extra["k"] / extra["k_total"], float(r["value"])))
    return {m: {lab: sorted(p) for lab, p in runs.items()} for m, runs in curves.items()}


@print_styled
def plot_progressive(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], path: str | Path) -> list[Path]:
    """One panel per progressive metric: value against the fraction of tokens kept, a line per run."""
    metrics = list(curves)
    fig, axes = new_figure(len(metrics), width=max(HALF_WIDTH, min(3.0 * len(metrics), 2 * FULL_WIDTH)))
    labels = list(dict.fromkeys(lab for m in metrics for lab in curves[m]))
    for ax, metric in zip(axes, metrics):
        for label, pts in curves[metric].items():
            i = labels.index(label)
            x, y = zip(*pts)
            ax.plot(x, y, color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], label=plain_text(label))
        ax.set_xscale("log", base=2)
        name = plain_text(metric.removeprefix(PROGRESSIVE_PREFIX))
        ax.set(xlabel="fraction of tokens kept, k / k_total", ylabel=name, title=f"progressive {name}")
    axes[0].legend(loc="best", frameon=False)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ schedules
@print_styled
def plot_schedules(schedules: Mapping[str, Sequence[int]], path: str | Path,
                   dataset_size: int | None = None) -> list[Path]:
    """log2 K_t per position, and the capacity of the first n tokens, sum_{t<n} log2 K_t, against n
    (log-log), crossing log2 N at the bound t* (marked, with log2 N, when ``dataset_size`` is given)."""
    from harness.models.schedules import capacity_cliff
    fig, (ax_k, ax_c) = new_figure(2)
    for i, (label, sizes) in enumerate(schedules.items()):
        color = f"C{i % 10}"
        bits = np.log2(np.asarray(sizes, dtype=np.float64))
        star = capacity_cliff(tuple(sizes), dataset_size) if dataset_size else None
        ax_k.plot(np.arange(len(sizes)), bits, color=color, label=plain_text(label))
        ax_c.plot(np.arange(1, len(sizes) + 1), np.cumsum(bits), color=color,
                  label=plain_text(label) + (f" (t* = {star})" if star is not None else ""))
        if star is not None:
            ax_c.axvline(star, color=color, linestyle=":", linewidth=1.0)
    if dataset_size:
        ax_c.axhline(math.log2(dataset_size), color="black", linestyle="--", linewidth=1.0,
                     label=f"log2 N, N = {dataset_size:,}")
    ax_c.set_xscale("log", base=2)
    ax_c.set_yscale("log", base=2)
    ax_k.set(xlabel="position t", ylabel=r"$\log_2 K_t$ [bits]", title="codebook size per position")
    ax_c.set(xlabel="first n tokens", ylabel=r"$\Sigma_{t<n} \log_2 K_t$ [bits]", title="cumulative capacity")
    ax_k.legend(loc="lower right", frameon=False)
    ax_c.legend(loc="upper left", frameon=False)
    return save_figure(fig, path)


def run_schedules(df) -> dict[str, tuple[int, ...]]:
    """{preset: K_t per position} of the tokenizer runs whose codebook size varies over positions (VCQ),
    read from the rows' run_info."""
    out = {}
    for _, r in df[df["kind"] == "tokenizer"].iterrows():
        sizes = run_info(r).get("codebook_sizes")
        if isinstance(sizes, list) and len(set(sizes)) > 1:
            out.setdefault(str(r["preset"]), tuple(int(k) for k in sizes))
    return out


# ------------------------------------------------------------------------------------------------ report hook
def render_figures(df, out_dir: str | Path, name: str = "results") -> list[Path]:
    """Every figure the rows support, as ``out_dir/<name>_<figure>.pdf/.png``; [] when none do."""
    out_dir = Path(out_dir)
    if df is None or df.empty:
        return []
    paths: list[Path] = []
    profiles = profiles_from_rows(df)
    if profiles:
        paths += plot_entropy_profiles(profiles, out_dir / f"{name}_entropy")
    points = usage_points(df[df["kind"] == "tokenizer"]) if "kind" in df else {}
    if points:
        paths += plot_codebook_usage(points, out_dir / f"{name}_codebook_usage")
    curves = progressive_curves(df)
    if curves:
        paths += plot_progressive(curves, out_dir / f"{name}_progressive")
    schedules = run_schedules(df) if "kind" in df else {}
    if schedules:
        paths += plot_schedules(schedules, out_dir / f"{name}_schedules")
    return paths
