"""The leaderboard as a static site: ``vqbench leaderboard RESULTS... --out site/``.

Works from the file system with no network: the script and style are the package's own
(``assets/``), figures are PNG files beside the pages. What it writes:

- ``index.html``: the tracks (harness.leaderboard.tracks) with how many entries and published numbers each has;
- ``track-<name>.html``: the track's setting, then its reproduced entries (tokenizers, generators) as sortable,
  filterable tables: one column per metric with its direction arrow, ``±`` where the value has a spread, the
  protocol as a badge and in the header's tooltip; where a track pairs a preset with a paper's model, the
  reported value and the difference (reproduced - reported) beside it; then the papers' numbers for the
  track's setting (protocol ``as-published:<paper>``), and the track's Pareto figures;
- ``entry-<id>.html``: one per reproduced run: provenance (config hash, git commit, package versions,
  checkpoint sha256 and training wall time when the run folder is beside the results file, protocol, N,
  seeds, hardware, evaluation time), every value it has, and its curves (entropy per position,
  progressive reconstruction, codebook usage vs size, schedules: what its rows support);
- ``figures/``: Pareto figures per track (rFID against bits per image, gFID against generator parameters,
  PSNR against tokens), each also as PDF for papers.

Every text from the rows is HTML-escaped. All results files are read and checked before anything is
written, and the site is built in a temporary folder that replaces ``out`` only when complete, so a bad
results file is refused with one line and an old site is never left half rewritten.
"""
from __future__ import annotations

import hashlib
import html
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.core.errors import VQBenchError
from harness.core.registry import TRACKS
from harness.core.results import ResultsStore, row_extra
from harness.reporting.published import PUBLISHED_FILE, PublishedNumber, load_published
from harness.reporting.tables import decimals, spread_text

ASSETS = Path(__file__).with_name("assets")
CANONICAL = ("", "canonical")
UP, DOWN = "↑", "↓"
SPREAD_OF = {"rkid": "rkid_std", "gkid": "gkid_std", "inception_score": "inception_score_std"}


def esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def entry_id(run_id: str) -> str:
    """A file-safe, unique page name for a run id (its readable part plus a short hash)."""
    slug = re.sub(r"[^A-Za-z0-9.@+-]+", "-", str(run_id)).strip("-")[:60] or "run"
    return f"{slug}-{hashlib.sha256(str(run_id).encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------------ reading
def read_results(paths: list[Path]) -> pd.DataFrame:
    """Every row of every results file, with the file it came from; one line naming a bad or missing file."""
    if not paths:
        raise VQBenchError("give at least one results file (results.jsonl written by vqbench run/eval)")
    frames = []
    seen: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            raise VQBenchError(f"results file {path} is a folder; pass its results.jsonl")
        df = ResultsStore(path).read(must_exist=True)
        df["source"] = str(path.resolve())
        for run in df["run_id"].unique():
            if run in seen and seen[run] != path.resolve():
                raise VQBenchError(f"run {run} is in both {seen[run]} and {path}: one entry per run; pass one of them")
            seen[run] = path.resolve()
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@dataclass
class Value:
    value: float
    spread: float | None          # bootstrap standard error, or the metric's own std (KID, IS)
    protocol: str
    n_images: int | None

    def text(self) -> str:
        """As the tables show it (harness.reporting.tables): about four significant digits, ``± spread``."""
        if not math.isfinite(self.value):
            return "nan"
        d = _decimals(self.value)
        out = f"{self.value:.{d}f}"
        if self.spread is not None and math.isfinite(self.spread):
            out += f' <span class="pm">± {spread_text(self.spread, self.value, d)}</span>'
        return out


def _decimals(v: float) -> int:
    return decimals(pd.Series([v])) if v != 0 else 2


def entry_values(rows: pd.DataFrame, metrics: tuple[str, ...], protocol: str) -> dict[str, Value]:
    """The latest value of each of ``metrics`` (not per-k curve points) under the track's protocol (or a
    metric that follows no Inception protocol: canonical, LPIPS's upsampled protocol)."""
    from harness.reporting.tables import is_curve_row
    out = {}
    plain = rows[~is_curve_row(rows)]
    for metric in metrics:
        own = plain[(plain["metric"] == metric) & (plain["protocol"].isin((*CANONICAL, protocol))
                                                   | plain["protocol"].str.startswith("lpips-"))]
        if own.empty:
            continue
        r = own.iloc[-1]
        spread = row_extra(r).get("stderr")
        if metric in SPREAD_OF:
            std = plain[(plain["metric"] == SPREAD_OF[metric]) & (plain["protocol"] == r["protocol"])]
            spread = float(std["value"].iloc[-1]) if not std.empty else spread
        n = r["n_images"]
        out[metric] = Value(float(r["value"]), spread, str(r["protocol"] or "canonical"),
                            None if pd.isna(n) else int(n))
    return out


def higher_is_better(rows: pd.DataFrame, metric: str, default: bool = True) -> bool:
    own = rows[rows["metric"] == metric]
    return bool(own["higher_is_better"].iloc[0]) if not own.empty else default


# ------------------------------------------------------------------------------------------------ pages
def page(title: str, body: str, depth_note: str = "") -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title>"
            '<link rel="stylesheet" href="assets/leaderboard.css">'
            '<script src="assets/leaderboard.js"></script></head>\n'
            f'<body><nav><a href="index.html">vqbench leaderboard</a>{depth_note}</nav>\n{body}\n</body></html>\n')


def header_cell(metric: str, up: bool, protocol: str, note: str) -> str:
    arrow = UP if up else DOWN
    return (f'<th data-dir="{"up" if up else "down"}" title="{esc(note)}">{esc(metric)} {arrow}'
            f'<span class="badge">{esc(protocol)}</span></th>')


def value_cell(v: Value | None, best: bool = False, href: str | None = None) -> str:
    if v is None:
        return '<td class="missing" data-value="">—</td>'
    number = v.value if math.isfinite(v.value) else ""
    css = ' class="best"' if best else ""
    text = v.text() if href is None else f'<a href="{esc(href)}">{v.text()}</a>'
    return f'<td{css} data-value="{number}">{text}</td>'


def _protocol_note(protocol: str) -> str:
    from harness.reporting.tables import protocol_note
    return f"protocol {protocol}: {protocol_note(protocol)}"


def _best(values: list[float], up: bool) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return (max if up else min)(finite) if len(finite) >= 2 else None


def entries_table(table_id: str, rows: pd.DataFrame, runs: list[str], metrics: tuple[str, ...], protocol: str,
                  reported: dict[str, dict[str, float]], probe: "ProbeColumns | None" = None) -> str:
    """One row per run: links, preset, then each metric (and, where the run is paired with a paper's
    model, the reported value and reproduced - reported), then the AR probe's results on the run's tokens."""
    values = {run: entry_values(rows[rows["run_id"] == run], metrics, protocol) for run in runs}
    shown = [m for m in metrics if any(m in v for v in values.values())]
    paired = [m for m in shown if any(m in reported.get(run, {}) for run in runs)]
    head = ['<th class="text">entry</th>', '<th class="text">preset</th>', '<th class="text">family</th>']
    for m in shown:
        protos = {values[r][m].protocol for r in runs if m in values[r]}
        protocol_name = ", ".join(sorted(protos))
        up = higher_is_better(rows, m)
        head.append(header_cell(m, up, protocol_name, "; ".join(_protocol_note(p) for p in sorted(protos))))
        if m in paired:
            head.append(header_cell(f"{m} reported", up, "as published", "the paper's number for the paired model"))
            head.append(f'<th data-dir="{"up" if up else "down"}" title="reproduced minus reported">'
                        f'Δ {esc(m)}</th>')
    if probe is not None:
        head += probe.headers()
    body = []
    for run in runs:
        first = rows[rows["run_id"] == run].iloc[0]
        cells = [f'<td class="text"><a href="entry-{entry_id(run)}.html">{esc(run)}</a></td>',
                 f'<td class="text">{esc(first["preset"])}</td>', f'<td class="text">{esc(first["model"])}</td>']
        for m in shown:
            up = higher_is_better(rows, m)
            best = _best([values[r][m].value for r in runs if m in values[r]], up)
            v = values[run].get(m)
            cells.append(value_cell(v, v is not None and best is not None and round(v.value, 6) == round(best, 6)))
            if m in paired:
                rep = reported.get(run, {}).get(m)
                cells.append(value_cell(None if rep is None else Value(rep, None, "as-published", None)))
                if rep is None or v is None:
                    cells.append('<td class="missing" data-value="">—</td>')
                else:
                    delta = v.value - rep
                    kind = "delta-better" if (delta > 0) == up else "delta-worse"
                    cells.append(f'<td class="{kind}" data-value="{delta}">{delta:+.{_decimals(delta)}f}</td>')
        if probe is not None:
            cells += probe.cells(run)
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<input class="filter" type="search" placeholder="filter rows" data-table="{table_id}">'
            f'<table class="leaderboard" id="{table_id}"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


PROBE_COLUMNS = ("nll_bits_per_image", "nll_bits_per_token", "gfid")


@dataclass
class ProbeColumns:
    """The AR probe's values of each tokenizer entry (its probe run's rows), as extra table columns that link
    to the probe run's page."""
    probe: object                          # the track's ARProbe
    rows: pd.DataFrame                     # the probe runs' rows
    protocol: str

    def run_of(self, tokenizer_run: str) -> str:
        return self.probe.run_id(tokenizer_run)

    def values(self, tokenizer_run: str) -> dict[str, Value]:
        own = self.rows[self.rows["run_id"] == self.run_of(tokenizer_run)]
        return entry_values(own, PROBE_COLUMNS, self.protocol) if not own.empty else {}

    def headers(self) -> list[str]:
        notes = {"nll_bits_per_token": "; per token of the sequence the AR models (a factorized tokenizer's k "
                                       "sub-codes count as k tokens): compare bits per image across tokenizers"}
        return [header_cell(f"AR probe {m}", higher_is_better(self.rows, m, default=False),
                            "canonical" if m.startswith("nll") else self.protocol,
                            "the track's AR probe trained on this tokenizer's tokens: " + self.probe.describe()
                            + notes.get(m, "")) for m in PROBE_COLUMNS]

    def cells(self, tokenizer_run: str) -> list[str]:
        values = self.values(tokenizer_run)
        page = f"entry-{entry_id(self.run_of(tokenizer_run))}.html"
        return [value_cell(values.get(m), href=page) for m in PROBE_COLUMNS]


def correlation_section(track, rows: pd.DataFrame, probe: ProbeColumns, runs: list[str], site: Path | None) -> str:
    """Across the track's tokenizer entries: Spearman's rho of each tokenizer metric with each AR-probe result,
    oriented (+: the entry better on the metric generates better), with its bootstrap interval; the figure is
    drawn into ``site`` (None: no figure)."""
    from harness.leaderboard.correlation import plot_rank_correlations, rank_correlations
    p = probe.probe
    table = {run: {m: v.value for m, v in entry_values(rows[rows["run_id"] == run], p.predictors, track.protocol).items()}
             | {m: v.value for m, v in probe.values(run).items()} for run in runs}
    directions = {m: higher_is_better(pd.concat([rows, probe.rows]), m) for m in (*p.predictors, *p.outcomes)}
    correlations = rank_correlations(table, p.predictors, p.outcomes, directions)
    intro = (f'<p class="note">Which tokenizer metric predicts generation? The AR probe ({esc(p.describe())}) '
             "is trained on every tokenizer entry's tokens. Spearman's rho across the entries, oriented so that + "
             "means the entry better on the metric is also better on the probe's result (rho is negated when one "
             "is higher-is-better and the other lower-is-better); in brackets the 95 % bootstrap interval over "
             "entries redrawn with replacement (harness.leaderboard.correlation).</p>")
    if not correlations:
        return intro + ('<p class="note">Fewer than 3 tokenizer entries have both a metric and an AR-probe result: '
                        f"run <code>vqbench ar-probe {esc(track.name)}</code>.</p>")
    figure = None
    if site is not None:
        figure = f"figures/{track.name}-ar-probe-correlations"
        plot_rank_correlations(correlations, site / figure)
    outcomes = list(dict.fromkeys(c.outcome for c in correlations))
    head = '<th class="text">tokenizer metric</th>' + "".join(
        f'<th data-dir="up" title="oriented Spearman rho with the AR probe\'s {esc(o)}">ρ with {esc(o)}</th>'
        f'<th title="entries with both values">n</th>' for o in outcomes)
    body = []
    for predictor in dict.fromkeys(c.predictor for c in correlations):
        cells = [f'<td class="text">{esc(predictor)} {UP if directions[predictor] else DOWN}</td>']
        for o in outcomes:
            c = next((c for c in correlations if c.predictor == predictor and c.outcome == o), None)
            if c is None:
                cells += ['<td class="missing" data-value="">—</td>', '<td class="missing" data-value="">—</td>']
                continue
            rho, low, high = c.oriented
            interval = f"[{low:+.2f}, {high:+.2f}]" if math.isfinite(low) else "[—]"
            cells.append(f'<td data-value="{rho}">{rho:+.2f} <span class="pm">{interval}</span></td>')
            cells.append(f'<td data-value="{c.n}">{c.n}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    figure_html = (f'<div class="figures"><a href="{esc(figure)}.pdf"><img src="{esc(figure)}.png" '
                   f'alt="rank correlations with the AR probe"></a></div>' if figure else "")
    return (intro + '<input class="filter" type="search" placeholder="filter rows" data-table="ar-probe-correlations">'
            f'<table class="leaderboard" id="ar-probe-correlations"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>' + figure_html)


PUBLISHED_KEYS = ("model", "paper", "table", "tokens", "codebook", "parameters", "cfg")


def published_table(table_id: str, records: list[PublishedNumber]) -> str:
    """The papers' numbers for the track's setting, one row per (model, paper, table, setting)."""
    from harness.reporting.published import METRIC_DIRECTIONS
    metrics = list(dict.fromkeys(r.metric for r in records))
    groups: dict[tuple, dict[str, PublishedNumber]] = {}
    for r in records:
        groups.setdefault(tuple(getattr(r, k) for k in PUBLISHED_KEYS), {})[r.metric] = r
    head = [f'<th class="text">{esc(k)}</th>' for k in PUBLISHED_KEYS]
    for m in metrics:
        papers = sorted({r.protocol for r in records if r.metric == m})
        head.append(header_cell(m, METRIC_DIRECTIONS.get(m, True), "as published",
                                "as each paper evaluated it, not re-measured: " + ", ".join(papers)))
    body = []
    for key, by_metric in groups.items():
        cells = [f'<td class="text">{esc("" if v is None else v)}</td>' for v in key]
        for m in metrics:
            r = by_metric.get(m)
            cells.append(value_cell(None if r is None else Value(float(r.value), None, r.protocol, None)))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<input class="filter" type="search" placeholder="filter rows" data-table="{table_id}">'
            f'<table class="leaderboard" id="{table_id}"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def reported_values(track, rows: pd.DataFrame, runs: list[str], records: list[PublishedNumber]) -> dict:
    """{run: {metric: the paired paper model's number}} for the runs whose preset the track pairs."""
    out = {}
    for run in runs:
        preset = rows[rows["run_id"] == run]["preset"].iloc[0]
        if preset in track.reported_as:
            paper, model = track.reported_as[preset]
            out[run] = {r.metric: float(r.value) for r in records if r.paper == paper and r.model == model}
    return out


def track_page(track, rows: pd.DataFrame, records: list[PublishedNumber], figures: list[str],
               probe_rows: pd.DataFrame | None = None, site: Path | None = None) -> str:
    """The track's page; ``site``: the folder its figures are drawn into (None: none drawn)."""
    setting = [("dataset", f"{track.dataset} at {track.resolution} x {track.resolution}"),
               ("token budget", f"{track.tokens} tokens per image"), ("training", track.training),
               ("protocol", _protocol_note(track.protocol)), ("seeds", track.seeds),
               ("suite", track.suite or "none: papers' numbers, and runs you add")]
    if track.ar_probe is not None:
        setting.append(("AR probe", f"suite {track.ar_probe.suite}: {track.ar_probe.describe()} "
                                    f"(`vqbench ar-probe {track.name}`)"))
    probe = (ProbeColumns(track.ar_probe, probe_rows, track.protocol)
             if track.ar_probe is not None and probe_rows is not None and not probe_rows.empty else None)
    parts = [f"<h1>Track {esc(track.name)}</h1>", f'<p>{esc(track.description)}</p>',
             '<dl class="provenance">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in setting) + "</dl>"]
    for kind, metrics in (("tokenizer", track.tokenizer_metrics), ("generator", track.generator_metrics)):
        runs = list(dict.fromkeys(rows[rows["kind"] == kind]["run_id"]))
        title = "Tokenizers" if kind == "tokenizer" else "Generators"
        parts.append(f"<h2>{title}: reproduced by vqbench</h2>")
        if runs:
            parts.append(entries_table(f"{kind}s", rows, runs, metrics, track.protocol,
                                       reported_values(track, rows, runs, records),
                                       probe if kind == "tokenizer" else None))
            if kind == "tokenizer" and track.ar_probe is not None:
                parts.append("<h2>Which tokenizer metric predicts generation? (AR probe)</h2>")
                if probe is None:
                    parts.append(f'<p class="note">No AR-probe results in the given results: run <code>vqbench '
                                 f"ar-probe {esc(track.name)}</code> ({esc(track.ar_probe.describe())}).</p>")
                else:
                    parts.append(correlation_section(track, rows, probe, runs, site))
        else:
            parts.append(f'<p class="note">No reproduced {kind} entries on this track in the given results.</p>')
    parts.append("<h2>Reported by the papers</h2>")
    if records:
        parts.append('<p class="note">As each paper evaluated them (protocol as-published:&lt;paper&gt;): '
                     "comparable with each other only where the papers share an evaluator.</p>")
        parts.append(published_table("published", records))
    else:
        parts.append('<p class="note">No published numbers for this setting in baselines/published.jsonl.</p>')
    if figures:
        parts.append("<h2>Pareto figures</h2><div class=\"figures\">" + "".join(
            f'<a href="{esc(f)}.pdf"><img src="{esc(f)}.png" alt="{esc(Path(f).name)}"></a>' for f in figures) + "</div>")
    return page(f"vqbench track {track.name}", "\n".join(parts), f" / track {esc(track.name)}")


def provenance(run_rows: pd.DataFrame) -> list[tuple[str, str]]:
    r = run_rows.iloc[-1]
    extra = row_extra(r)
    protocols = ", ".join(sorted({str(p or "canonical") for p in run_rows["protocol"]}))
    n_images = ", ".join(str(int(n)) for n in sorted({n for n in run_rows["n_images"] if pd.notna(n)}))
    seeds = ", ".join(str(int(s)) for s in sorted({s for s in run_rows["seed"] if pd.notna(s)}))
    eval_seconds = sum(row_extra(x).get("eval_seconds", 0.0) for _, x in
                       run_rows.drop_duplicates("started_at").iterrows())
    out = [("run id", r["run_id"]), ("preset", r["preset"]), ("config hash", r["config_hash"]),
           ("git commit", r["git_sha"]), ("package versions", r["package_versions"]), ("protocols", protocols),
           ("N (images evaluated)", n_images), ("seeds", seeds),
           ("hardware", extra.get("hardware", "not recorded (rows written before vqbench recorded it)")),
           ("evaluation wall time", f"{eval_seconds:.0f} s"), ("results file", r["source"])]
    checkpoint = run_checkpoint(r)
    if checkpoint is None:
        out.append(("checkpoint", "not found beside the results file (runs/<label>/checkpoints)"))
    else:
        from harness.core.checkpoint import load_state
        state = load_state(checkpoint)
        out += [("checkpoint", str(checkpoint)), ("checkpoint sha256 (weights)", weights_sha256(checkpoint)),
                ("training wall time", f"{state.get('train_seconds', float('nan')):.0f} s at step {state.get('step')}")]
    return out


def run_checkpoint(row) -> Path | None:
    """The latest checkpoint of the row's run in the suite folder of its results file, if there: its own run
    folder, or the one whose weights it evaluated (an AR-probe run reusing a suite's generator: the same
    configuration hash)."""
    from harness.core.checkpoint import latest, load_state
    label = str(row["run_id"]).split("/", 1)[-1]
    runs = Path(row["source"]).parent / "runs"
    # a generator's hash names its tokenizer's (two equal ones are the same training); a tokenizer's does not
    others = row["kind"] == "generator" and runs.is_dir()
    candidates = [runs / label] + (sorted(p for p in runs.iterdir() if p.name != label) if others else [])
    for folder in candidates:
        root = folder / "checkpoints"
        try:
            found = latest(root) if root.is_dir() else None
            if found is not None and (folder.name == label or load_state(found).get("config_hash") == row["config_hash"]):
                return found
        except VQBenchError:
            continue
    return None


def weights_sha256(checkpoint: Path) -> str:
    """sha256 of the checkpoint's weights file(s) (not the optimizer state or token caches beside them)."""
    files = sorted(p for p in checkpoint.iterdir() if p.name.startswith(("weights", "model"))
                   and p.suffix in (".safetensors", ".pt", ".bin"))
    if not files:
        return "no weights file"
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest() + (f" ({', '.join(p.name for p in files)})" if len(files) > 1 else f" ({files[0].name})")


def entry_images(run_rows: pd.DataFrame, site: Path, stem: str) -> list[tuple[str, str]]:
    """(relative PNG path, caption) of the entry's pictures, drawn from its run folder and samples: a tokenizer's
    reconstruction grid and codebook usage histogram, a generator's samples."""
    from harness.leaderboard.images import samples_grid, tokenizer_pictures
    r = run_rows.iloc[-1]
    label = str(r["run_id"]).split("/", 1)[-1]
    if r["kind"] == "tokenizer":
        checkpoint = run_checkpoint(r)
        if checkpoint is None:
            return []
        pictures = tokenizer_pictures(checkpoint, str(r["dataset"]), int(r["resolution"]), site / "figures" / stem)
        return [(str(path.relative_to(site)), caption) for path, caption in pictures]
    target = f"figures/{stem}/samples.png"
    if samples_grid(Path(r["source"]).parent / "samples" / f"{label}.npz", site / target):
        return [(target, "the first class-balanced samples (guided), as evaluated")]
    return []


def entry_page(run: str, run_rows: pd.DataFrame, figures: list[str], tracks: list[str],
               images: list[tuple[str, str]] = ()) -> str:
    from harness.reporting.tables import is_curve_row
    plain = run_rows[~is_curve_row(run_rows)]
    latest = plain.drop_duplicates(subset=["metric", "protocol", "split"], keep="last")
    value_rows = []
    for _, r in latest.iterrows():
        if str(r["metric"]).endswith("_std"):
            continue
        spread = row_extra(r).get("stderr")
        v = Value(float(r["value"]), spread, str(r["protocol"] or "canonical"), None)
        value_rows.append(f'<tr><td class="text">{esc(r["metric"])} {UP if r["higher_is_better"] else DOWN}</td>'
                          f'{value_cell(v)}<td class="text"><span class="badge">{esc(v.protocol)}</span></td>'
                          f'<td data-value="{esc(r["n_images"])}">{esc(r["n_images"])}</td>'
                          f'<td class="text">{esc(r["split"])}</td></tr>')
    parts = [f"<h1>{esc(run)}</h1>",
             "<p>On track" + ("s " if len(tracks) > 1 else " ") + ", ".join(
                 f'<a href="track-{esc(t)}.html">{esc(t)}</a>' for t in tracks) + "</p>" if tracks else "",
             "<h2>Provenance</h2>",
             '<dl class="provenance">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in provenance(run_rows))
             + "</dl>", "<h2>Values</h2>",
             '<input class="filter" type="search" placeholder="filter rows" data-table="values">'
             '<table class="leaderboard" id="values"><thead><tr><th class="text">metric</th><th>value</th>'
             '<th class="text">protocol</th><th>N</th><th class="text">split</th></tr></thead>'
             f'<tbody>{"".join(value_rows)}</tbody></table>']
    if images:
        parts.append("<h2>Images</h2>")
    for path, caption in images:
        img = f'<img src="{esc(path)}" alt="{esc(caption)}">'
        if path.endswith("codebook-usage.png"):          # a figure, also as PDF
            img = f'<a href="{esc(path[:-4])}.pdf">{img}</a>'
        parts.append(f'<figure>{img}<figcaption class="note">{esc(caption)}</figcaption></figure>')
    if not images:
        parts.append('<p class="note">No images: the run folder (runs/&lt;label&gt;) or its samples are not beside '
                     "the results file.</p>")
    if figures:
        parts.append("<h2>Curves</h2><div class=\"figures\">" + "".join(
            f'<a href="{esc(f)}.pdf"><img src="{esc(f)}.png" alt="{esc(Path(f).name)}"></a>' for f in figures) + "</div>")
    else:
        parts.append('<p class="note">No curves in this run\'s rows (entropy per position, progressive '
                     "reconstruction and codebook usage come from `vqbench analyze entropy`, `progressive` and "
                     "codebook-size sweeps).</p>")
    return page(f"vqbench entry {run}", "\n".join(parts), f" / entry {esc(run)}")


def index_page(summary: list[tuple[str, str, int, int]], other: int) -> str:
    rows = "".join(f'<tr><td class="text"><a href="track-{esc(n)}.html">{esc(n)}</a></td>'
                   f'<td class="text">{esc(d)}</td><td data-value="{e}">{e}</td><td data-value="{p}">{p}</td></tr>'
                   for n, d, e, p in summary)
    body = ("<h1>vqbench leaderboard</h1>"
            "<p>Each track is a frozen setting: entries on one track are comparable by construction; entries of "
            "different tracks never share a table. Reproduced values carry their protocol; the papers' numbers are "
            "shown as published beside them.</p>"
            '<table class="leaderboard" id="tracks"><thead><tr><th class="text">track</th><th class="text">setting'
            "</th><th>reproduced entries</th><th>published numbers</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            + (f'<p class="note">{other} result rows belong to no track (another suite, dataset or resolution) '
               "and are not shown.</p>" if other else ""))
    return page("vqbench leaderboard", body)


# ------------------------------------------------------------------------------------------------ figures
def pareto_figures(track, rows: pd.DataFrame, folder: Path) -> list[str]:
    """Each Pareto figure the track's rows support; paths relative to the site root, without suffix."""
    from harness.leaderboard.pareto import PARETO_AXES, plot_pareto
    out = []
    for name, (kind, x_key, y_metric) in PARETO_AXES.items():
        points = {}
        for run, g in rows[rows["kind"] == kind].groupby("run_id", sort=False):
            v = entry_values(g, (y_metric,), track.protocol).get(y_metric)
            x = row_extra(g.iloc[-1]).get("run_info", {}).get(x_key)
            if v is not None and x is not None and math.isfinite(v.value):
                points[run] = (float(x), v.value)
        if len(points) >= 2:
            stem = f"figures/{track.name}-{name}"
            plot_pareto(points, x_key, y_metric, higher_is_better(rows, y_metric), folder / stem)
            out.append(stem)
    return out


# ------------------------------------------------------------------------------------------------ building
def build_site(results: list[Path], out: Path, *, published: Path = PUBLISHED_FILE, figures: bool = True) -> Path:
    """Write the site for ``results`` into ``out`` (replaced whole); returns its index.html."""
    from harness.reporting.figures import render_figures
    rows = read_results(list(results))
    records = load_published(published)
    tracks = [e.obj for e in TRACKS.entries()]
    out = Path(out).resolve()
    check_site_folder(out, [Path(p) for p in results])
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "assets").mkdir(parents=True)
        (tmp / "figures").mkdir()
        for asset in ASSETS.iterdir():
            shutil.copyfile(asset, tmp / "assets" / asset.name)
        summary, on_track, tracks_of = [], pd.Series(False, index=rows.index), {}
        for track in tracks:
            mine = _rows_where(rows, track.takes_run)
            probing = _rows_where(rows, track.takes_probe_run)
            on_track |= mine | probing
            track_rows = rows[mine]
            for run in dict.fromkeys(rows[mine | probing]["run_id"]):
                tracks_of.setdefault(run, []).append(track.name)
            track_records = [r for r in records if track.takes_published(r)]
            figs = pareto_figures(track, track_rows, tmp) if figures else []
            (tmp / f"track-{track.name}.html").write_text(
                track_page(track, track_rows, track_records, figs, rows[probing], tmp if figures else None),
                encoding="utf-8")
            summary.append((track.name, track.description, track_rows["run_id"].nunique(), len(track_records)))
        for run, run_rows in rows[on_track].groupby("run_id", sort=False):
            folder = tmp / "figures" / entry_id(run)
            figs, images = [], []
            if figures:
                folder.mkdir()
                figs = [str(p.relative_to(tmp).with_suffix("")) for p in render_figures(run_rows, folder, "curves")
                        if p.suffix == ".png"]
                images = entry_images(run_rows, tmp, entry_id(run))
            (tmp / f"entry-{entry_id(run)}.html").write_text(
                entry_page(run, run_rows, figs, tracks_of[run], images), encoding="utf-8")
        (tmp / "index.html").write_text(index_page(summary, int((~on_track).sum())), encoding="utf-8")
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _rows_where(rows: pd.DataFrame, takes) -> pd.Series:
    """Which rows ``takes(run_id, dataset, resolution)`` accepts."""
    if rows.empty:
        return pd.Series(False, index=rows.index)
    return rows.apply(lambda r: takes(r["run_id"], r["dataset"], r["resolution"]), axis=1).astype(bool)


def check_site_folder(out: Path, results: list[Path]) -> None:
    """``out`` is replaced whole, so it must be new, empty or a site this command wrote (never a suite folder)."""
    if out.exists() and not out.is_dir():
        raise VQBenchError(f"--out {out} is a file; give a folder for the site")
    if out == out.parent:
        raise VQBenchError(f"--out {out}: give a folder of its own for the site")
    inside = [str(p) for p in results if p.resolve().is_relative_to(out)]
    if inside:
        raise VQBenchError(f"--out {out} contains the results file {inside[0]}; give another folder for the site")
    is_site = (out / "index.html").is_file() and (out / "assets" / "leaderboard.js").is_file()
    if out.is_dir() and any(out.iterdir()) and not is_site:
        raise VQBenchError(f"--out {out} holds other files and is not a leaderboard site; the site replaces its folder "
                           f"whole, so give a new folder (e.g. {out / 'site'})")


def _replace_folder(new: Path, out: Path) -> None:
    """``new`` becomes ``out``; an old ``out`` is moved aside first and removed only after the swap."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
