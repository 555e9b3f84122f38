"""Render the long results store wide: one row per run, one column per comparable metric.

Rows are keyed by ``KEY_COLUMNS`` (model, preset, dataset, split, resolution, seed, run_id), in the
order the runs first appear. A column holds only numbers computed the same way:

- the header carries the direction (``psnr ↑``, ``rfid ↓``) and, when the protocol is not
  ``canonical``, the protocol (``psnr [llamagen] ↑``), so legacy-protocol numbers never share a
  column with canonical ones;
- the other protocol facts (number of images N, feature extractor) go into the header only when
  they differ between rows of that metric (``rfid [N=5000] ↓`` next to ``rfid [N=50000] ↓``); when
  constant, they are listed once in footnotes under the table. One rule for both: a fact that varies
  within a metric splits the column, a constant one is a footnote. A separate N column per metric
  would mostly repeat one number.

Markdown and LaTeX state the context columns (dataset, split, resolution, seed) once in a footnote
when every row shares them; the CSV keeps all columns at full precision. When a run recorded the
same column twice, the row last in the store wins. Numbers get one number of decimals per column,
about four significant digits at the column's median magnitude (23.41 / 30.00, 0.8123), so a column
lines up; the best value of a column with at least two values is bold (Markdown and LaTeX), compared
as displayed and following the arrow. ``render`` writes Markdown (arrow legend, table, footnotes),
CSV and a LaTeX booktabs ``tabular`` (footnotes as ``%`` comments), each atomically.

Every text that comes from the rows (run ids, presets, dataset names, metric and protocol names, in
cells, headers, titles and footnotes) is made safe for the format it enters: CSV text cells and
headers that a spreadsheet would run as a formula (starting with ``= + - @``, tab or carriage return)
get a leading ``'`` while numbers stay numbers (``csv_safe``); Markdown escapes HTML (``< > &``),
``|`` and ``\\`` and puts each row on one line (``md_escape``); LaTeX escapes every special character and
line break (``tex_escape``), so a name can neither end a ``%`` comment nor break the table.
"""
from __future__ import annotations

import csv
import math
import numbers
import re
from pathlib import Path

import pandas as pd

from harness.core.errors import VQBenchError
from harness.core.io import file_error, write_atomic
from harness.core.results import row_extra

KEY_COLUMNS = ["model", "preset", "dataset", "split", "resolution", "seed", "run_id"]
# key columns that Markdown/LaTeX move to a footnote when every row shares their value
CONTEXT_COLUMNS = ["dataset", "split", "resolution", "seed"]
UP, DOWN = "↑", "↓"
CANONICAL = "canonical"
LEGEND = f"{UP} higher is better, {DOWN} lower is better; bold: best in its column."
# One line per protocol for the footnotes (details in harness/evaluation/metrics).
PROTOCOL_NOTES = {
    CANONICAL: "vqbench's protocol: PSNR/SSIM per image on uint8-rounded RGB in [0, 1], mean over "
               "images; codebook usage over the whole evaluation split",
    "llamagen": "LlamaGen's code: only the reconstruction rounded, SSIM with data_range 2; codebook "
                "usage over a zero-initialized window of the last 65,536 tokens (here: of the evaluation split)",
    "taming": "taming-transformers' code: perplexity exp(entropy) of each batch's code histogram (eps 1e-10), "
              "mean over batches (depends on the batch size, in each row's extra)",
    "seed-voken": "SEED-Voken's code: both images truncated to uint8, mean of per-batch means",
    "vtbench": "VTBench's code: PSNR from the MSE over the whole set, 11x11 Gaussian SSIM",
    "vqgan-lc": "VQGAN-LC's code: PSNR on the Y channel, piq SSIM",
    "prompt-classifier": "prompt accuracy: share of samples a small CNN trained on the dataset assigns to the "
                         "class of their prompt (chance: 1 / classes); the judge and its test accuracy are "
                         "the feature extractor; *_nocfg without guidance",
    "lpips-upsampled-64": "LPIPS of images under 32 px, bilinearly upsampled to a 64-px short side first "
                          "(AlexNet cannot see below 31 px): not comparable with LPIPS at native size",
    "geneval": "GenEval's rules (detections > 0.3, 0.9 for counting, position margin 0.1, CLIP colour); "
               "the judge is the feature extractor",
}
_MISSING = {"md": "—", "tex": "--"}


def protocol_note(protocol: str) -> str:
    """The footnote of a protocol tag: a registered evaluation protocol's description, else the notes above."""
    from harness.core.registry import PROTOCOLS
    if protocol in PROTOCOLS:
        return PROTOCOLS.entry(protocol).meta.description
    return PROTOCOL_NOTES.get(protocol, "see harness/evaluation/metrics")


def column_name(metric: str, protocol: str, higher: bool, details: tuple[str, ...] = ()) -> str:
    """``metric [protocol, details] ↑``; the bracket is left out when there is nothing to say."""
    tags = ([] if protocol in ("", CANONICAL) else [protocol]) + list(details)
    return metric + (f" [{', '.join(tags)}]" if tags else "") + f" {UP if higher else DOWN}"


STDERR = "_se"


def with_stderr_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows plus, for each row whose ``extra`` holds a bootstrap ``stderr``, a row ``<metric>_se`` with
    it as value: shown as ``± se`` beside the value (``spread_columns``), kept as a column in the CSV."""
    if "extra" not in df or df.empty:
        return df
    # only the latest row of a value carries its spread into the table (an older evaluation's stays out)
    latest = ~df.duplicated(subset=[c for c in ("run_id", "dataset", "split", "metric", "protocol") if c in df],
                            keep="last")
    stderr = [row_extra(r).get("stderr") if keep else None
              for r, keep in zip(df[["extra"]].to_dict("records"), latest)]
    has = pd.Series([v is not None for v in stderr], index=df.index)
    if not has.any():
        return df
    extra_rows = df[has].copy()
    extra_rows["metric"] = extra_rows["metric"] + STDERR
    extra_rows["value"] = [v for v in stderr if v is not None]
    extra_rows["higher_is_better"] = False
    return pd.concat([df, extra_rows], ignore_index=True)


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """The long rows with a ``column`` label each (module docstring), duplicates resolved."""
    from harness.evaluation.protocols import row_protocol
    df = with_stderr_rows(df.copy())
    df["protocol"] = df["protocol"].fillna("").replace("", CANONICAL)
    if "extra" in df:            # Inception rows written before protocols existed read as torch-fidelity
        df["protocol"] = [row_protocol(r) for r in df[["metric", "protocol", "extra"]].to_dict("records")]
    df["feature_extractor"] = df["feature_extractor"].fillna("")
    df["higher_is_better"] = df["higher_is_better"].astype(bool)
    df[KEY_COLUMNS] = df[KEY_COLUMNS].astype(object).where(df[KEY_COLUMNS].notna(), "")
    labels = pd.Series("", index=df.index, dtype=object)
    # which facts went into the header (per row), so the footnotes leave them out
    df["n_split"] = df["fe_split"] = False
    # a value and its spread (X, X_std) split their columns alike, so they stay a pair (spread_columns)
    family = df["metric"].str.removesuffix(SEED_STD).str.replace("_std", "", n=1, regex=False).str.removesuffix(STDERR)
    for (metric, protocol, higher), group in df.groupby(["metric", "protocol", "higher_is_better"], sort=False):
        kin = df[(family == family[group.index[0]]) & (df["protocol"] == protocol)]
        split_n = kin["n_images"].nunique(dropna=False) > 1
        split_fe = kin["feature_extractor"].nunique() > 1
        df.loc[group.index, ["n_split", "fe_split"]] = [split_n, split_fe]
        for i, r in group.iterrows():
            details = ((f"N={r['n_images']}",) if split_n else ()) + \
                      ((r["feature_extractor"],) if split_fe and r["feature_extractor"] else ())
            labels[i] = column_name(metric, protocol, higher, details)
    df["column"] = labels
    return df.drop_duplicates(subset=KEY_COLUMNS + ["column"], keep="last")


def wide_table(df: pd.DataFrame) -> pd.DataFrame:
    """Key columns, then one column per label, in the order rows and metrics first appear."""
    if df.empty:
        return pd.DataFrame(columns=KEY_COLUMNS)
    long = _labelled(df)
    rows = pd.MultiIndex.from_frame(long[KEY_COLUMNS].drop_duplicates())
    wide = long.pivot(index=KEY_COLUMNS, columns="column", values="value")
    wide = wide.reindex(index=rows, columns=list(dict.fromkeys(long["column"]))).reset_index()
    wide.columns.name = None
    return wide


def footnotes(df: pd.DataFrame) -> list[str]:
    """The protocol facts that hold for whole columns: N, feature extractors, protocol meanings."""
    if df.empty:
        return []
    long = _labelled(df)
    shared = _shared_context(long)
    notes = ["Every row: " + ", ".join(f"{k} {v}" for k, v in shared.items()) + "."] if shared else []
    spreads = spread_columns(wide_table(df))
    hidden = set(spreads.values())                              # shown as ± beside their values
    long = long[~long["column"].isin(hidden)]
    columns = list(dict.fromkeys(long["column"]))
    for fact, split, title in (("n_images", "n_split", "N (images evaluated)"),
                               ("feature_extractor", "fe_split", "Features")):
        by_value: dict = {}
        for column, group in long.groupby("column", sort=False):
            value = group[fact].iloc[0]      # constant within a column: it varies only across split ones
            if not group[split].iloc[0] and value not in ("", None):
                by_value.setdefault(value, []).append(column)
        if len(by_value) == 1 and sum(map(len, by_value.values())) == len(columns):
            notes.append(f"{title}: {_fact(next(iter(by_value)))} in every column.")
        elif by_value:
            notes.append(f"{title}: " + "; ".join(f"{_fact(v)} for {', '.join(cols)}"
                                                  for v, cols in by_value.items()) + ".")
    for protocol in dict.fromkeys(long["protocol"]):
        where = "canonical (columns naming no protocol)" if protocol == CANONICAL else f"[{protocol}]"
        notes.append(f"{where}: {protocol_note(protocol)}.")
    if "kind" in long and (long["kind"] == "generator").any():
        notes.append("generation metrics: class-balanced samples (text-conditioned runs: one per caption of the "
                     "reference images) against the reference split's images; *_nocfg: the same sampler without "
                     "guidance; sampler settings in each row's extra.")
    if any(c.split(" ", 1)[0].endswith(STDERR) for c in hidden):
        notes.append("± after a mean over images (PSNR, SSIM, LPIPS, unique ratio), an FID or a codebook usage, "
                     "entropy or perplexity: its bootstrap standard error over the evaluated images redrawn with "
                     "replacement (seeded; draws and 95 % interval or bias in each row's extra; the *_se columns "
                     "of the CSV); after a probe accuracy: its binomial standard error over the test images.")
    if any(c.split(" ", 1)[0].endswith(SEED_STD) for c in hidden):
        n_seeds = sorted({len(str(s).split(",")) for s in long["seed"]})
        notes.append(f"± after a mean over seeds: the sample standard deviation over the {'/'.join(map(str, n_seeds))} "
                     "training seeds of each run (the seed column lists them; each seed's own row is in the main "
                     "table).")
    if any("_std" in c.split(" ", 1)[0] and not c.split(" ", 1)[0].endswith(SEED_STD) for c in hidden):
        notes.append("± after KID or IS: the metric's own spread, KID's standard deviation over its subsets, IS's "
                     "over its splits (the *_std rows of the store).")
    shrunk = sorted({int(e["kid_subset_size"]) for e in (row_extra(r) for _, r in long.iterrows())
                     if e.get("kid_subset_shrunk")})
    if shrunk:
        notes.append(f"KID with N below its 1,000-image subsets: subsets of {', '.join(map(str, shrunk))} images, "
                     "drawn from the same N images, so they overlap and the ± understates the uncertainty.")
    return notes


def _shared_context(df: pd.DataFrame) -> dict:
    return {c: _key_text(df[c].iloc[0]) for c in CONTEXT_COLUMNS if df[c].nunique(dropna=False) == 1}


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """The wide table without the context columns that ``footnotes`` states once."""
    wide = wide_table(df)
    return wide.drop(columns=list(_shared_context(wide)))


def _fact(v) -> str:
    return f"{v:,}" if isinstance(v, numbers.Real) and not isinstance(v, bool) else str(v)


def _metric_columns(wide: pd.DataFrame) -> list[str]:
    return [c for c in wide.columns if c not in KEY_COLUMNS]


def decimals(values: pd.Series) -> int:
    """Decimals giving the column's typical (median) magnitude about four significant digits."""
    magnitudes = values.abs()[lambda m: (m > 0) & (m < math.inf)]
    if magnitudes.empty:
        return 0
    return min(6, max(0, 3 - math.floor(math.log10(magnitudes.median()))))


def spread_columns(wide: pd.DataFrame) -> dict[str, str]:
    """``{value column: its std column}``: a metric ``X_std`` (KID over its subsets, IS over its splits)
    is shown as ``± std`` beside ``X`` of the same protocol instead of as a column of its own."""
    def unarrowed(label: str) -> str:            # a spread's direction need not be its value's
        return label.rsplit(" ", 1)[0]
    by_label = {unarrowed(c): c for c in _metric_columns(wide)}
    pairs = {}
    for label, c in by_label.items():
        name, _, rest = label.partition(" ")
        if name.endswith(SEED_STD):
            base = by_label.get(f"{name.removesuffix(SEED_STD)} {rest}".strip())
        elif name.endswith(STDERR):
            base = by_label.get(f"{name.removesuffix(STDERR)} {rest}".strip())
        else:
            base = by_label.get(f"{name.replace('_std', '', 1)} {rest}".strip()) if "_std" in name else None
        if base is not None and base != c:
            pairs[base] = c
    return pairs


def _cells(wide: pd.DataFrame, missing: str, bold, escape=str, pm: str = "±") -> list[list[str]]:
    """Display strings, the best value per metric column wrapped by ``bold``, ``± std`` after a value
    that has one (``spread_columns``, whose std columns are not shown); key (text) cells go through
    ``escape`` (numbers need none)."""
    spreads = spread_columns(wide)
    columns = {}
    for c in wide.columns:
        if c in spreads.values():
            continue
        if c not in KEY_COLUMNS:
            values = pd.to_numeric(wide[c], errors="coerce").astype(float)
            d = decimals(values)
            shown = [None if not math.isfinite(v) else round(v, d) for v in values]
            present = [v for v in shown if v is not None]
            best = (max if c.endswith(UP) else min)(present) if len(present) >= 2 else None
            spread = (pd.to_numeric(wide[spreads[c]], errors="coerce").astype(float) if c in spreads
                      else pd.Series(math.nan, index=wide.index))
            columns[c] = [missing if v is None else (bold(f"{v:.{d}f}") if v == best else f"{v:.{d}f}")
                          + (f" {pm} {spread_text(sd, full, d)}" if math.isfinite(sd) else "")
                          for v, full, sd in zip(shown, values, spread)]
        else:
            columns[c] = [escape(_key_text(v)) for v in wide[c]]
    return [list(row) for row in zip(*columns.values())]


def spread_text(sd: float, value: float, d: int) -> str:
    """A spread shown beside a value of ``d`` decimals: with more decimals where a small spread needs them to keep
    two significant digits (never ± 0.00 for a nonzero spread); a spread at rounding level of its value (KID
    whose subsets are the whole set: 1e-17) is 0."""
    if abs(sd) <= 1e-12 * abs(value):
        sd = 0.0
    return f"{sd:.{d if sd == 0 else max(d, 1 - math.floor(math.log10(abs(sd))))}f}"


def _shown_columns(wide: pd.DataFrame) -> list[str]:
    hidden = set(spread_columns(wide).values())
    return [c for c in wide.columns if c not in hidden]


def _key_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))           # a key column that went through float (NaN elsewhere)
    return str(v)


# Characters that end a line for Markdown, LaTeX or Python's str.splitlines, and other control characters.
_LINE_BREAKS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
# HTML, the table's cell separator, code spans; links and images are broken at their "](" below
_MD_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": r"\|", "\\": "\\\\", "`": r"\`"}


def one_line(text) -> str:
    """``text`` with every line break and control character (newline, CR, tab, U+2028, ...) a space."""
    return _LINE_BREAKS.sub(" ", str(text))


def md_escape(text) -> str:
    """Text that stays one Markdown table cell on one line and shows as written: HTML escaped (``<``
    ``>`` ``&``); ``|``, ``\\``, backticks and the ``(`` of ``](`` backslash-escaped (no cell break,
    code span, link or image); line breaks made spaces."""
    return "".join(_MD_SPECIAL.get(ch, ch) for ch in one_line(text)).replace("](", "]\\(")


def _md_note(note: str) -> str:
    text = md_escape(note)
    return "\\" + text if text.startswith("[") else text      # not a link reference definition


def to_markdown(df: pd.DataFrame) -> str:
    """Legend line, the wide table, then the footnotes."""
    if df.empty:
        return "no results yet\n"
    wide = _display(df)
    shown = _shown_columns(wide)
    head = "| " + " | ".join(md_escape(c) for c in shown) + " |"
    sep = "|" + "|".join("---" if c in KEY_COLUMNS else "---:" for c in shown) + "|"
    body = ["| " + " | ".join(row) + " |"
            for row in _cells(wide, _MISSING["md"], lambda s: f"**{s}**", md_escape)]
    return "\n".join([LEGEND, "", head, sep, *body, "", *map(_md_note, footnotes(df))]) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                UP: r"$\uparrow$", DOWN: r"$\downarrow$"}


def tex_escape(text) -> str:
    """``text`` as LaTeX that prints it: every special character (``\\ { } $ & # ^ _ % ~ < > |``)
    escaped and every line break or control character a space (so it cannot end a ``%`` comment)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in one_line(text))


def tex_cell(text) -> str:
    # a cell starting with [ right after \\, \toprule or \midrule would be read as their optional argument
    out = tex_escape(text)
    return "{}" + out if out.lstrip().startswith("[") else out


def to_latex(df: pd.DataFrame) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); footnotes as comments above it."""
    if df.empty:
        return "% no results yet\n"
    wide = _display(df)
    shown = _shown_columns(wide)
    n_keys = len(wide.columns) - len(_metric_columns(wide))
    lines = [f"% {tex_escape(note)}" for note in [LEGEND, *footnotes(df)]]
    lines += [r"\begin{tabular}{" + "l" * n_keys + "r" * (len(shown) - n_keys) + "}", r"\toprule",
              " & ".join(tex_cell(c) for c in shown) + r" \\", r"\midrule"]
    for row in _cells(wide, _MISSING["tex"], lambda s: r"\textbf{" + s + "}", tex_cell, pm=r"$\pm$"):
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell a spreadsheet will not run: text starting with ``= + - @``, tab or carriage return
    gets a leading ``'`` (OWASP's CSV injection rule); numbers (also negative ones) are kept as they are."""
    if isinstance(value, str) and value.startswith(_CSV_FORMULA):
        return "'" + value
    return value


def safe_csv(table: pd.DataFrame) -> str:
    """``table`` as CSV with every text cell and header made safe by ``csv_safe``, and quoted (a line
    break or carriage return inside a name stays inside its cell); numbers are written bare."""
    out = table.copy()
    for c in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c])):
            out[c] = out[c].map(csv_safe)         # text (or mixed) columns; numbers in them stay numbers
    out.columns = [csv_safe(str(c)) for c in out.columns]
    return out.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)


KIND_TITLES = {"tokenizer": "Tokenizers", "generator": "Generators"}


def is_curve_row(df: pd.DataFrame) -> pd.Series:
    """Rows of a curve: a (run, metric, protocol) recorded at several x values ``extra["k"]``
    (progressive reconstruction per k, conditional entropy per position). A wide table would keep one
    point per run, so curves go to their own long CSV and to figures; a metric measured at one k
    (a linear probe on the first k tokens) stays a table column."""
    if df.empty:
        return pd.Series(False, index=df.index, dtype=bool)
    k = df.apply(lambda r: row_extra(r).get("k"), axis=1)
    has_k = k.notna()
    points = k[has_k].groupby([df.loc[has_k, c] for c in ("run_id", "metric", "protocol")]).transform("nunique")
    curve = pd.Series(False, index=df.index, dtype=bool)
    curve.loc[points.index] = points > 1
    return curve


def curves_table(df: pd.DataFrame) -> pd.DataFrame:
    """The curve rows, long: one line per (run, metric, k) with the protocol facts."""
    cols = ["run_id", "model", "preset", "dataset", "split", "resolution", "metric", "protocol", "n_images"]
    rows = df[is_curve_row(df)]
    out = rows[cols].copy()
    out.insert(len(cols) - 2, "k", [row_extra(r)["k"] for _, r in rows.iterrows()])
    out["value"] = rows["value"].values
    return out.reset_index(drop=True)


def render(df: pd.DataFrame, out_dir: str | Path, name: str = "results") -> list[Path]:
    """Write ``name``.md / .csv / .tex under ``out_dir`` (and ``name``_curves.csv when there are curve
    rows; ``name``_seeds.md / .csv / .tex when runs were repeated over seeds); returns their paths (Markdown
    first). Tokenizer and generator rows get a table each."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    curve = is_curve_row(df)
    table = df[~curve]
    paths, texts = _tables(table, out_dir, name)
    if not df.empty and curve.any():
        paths.append(out_dir / f"{name}_curves.csv")
        texts.append(safe_csv(curves_table(df)))
    over_seeds = seed_means(table)
    if not over_seeds.empty:
        more = _tables(over_seeds, out_dir, f"{name}_seeds")
        paths, texts = paths + more[0], texts + more[1]
    for path, text in zip(paths, texts):
        write_atomic(path, text.encode("utf-8"))      # a failure is already one line naming the file
    return paths


def _tables(table: pd.DataFrame, out_dir: Path, name: str) -> tuple[list[Path], list[str]]:
    kinds = list(dict.fromkeys(table["kind"])) if not table.empty else []
    if len(kinds) > 1:
        parts = [(KIND_TITLES.get(k, k), table[table["kind"] == k]) for k in kinds]
        md = "\n".join(f"## {md_escape(title)}\n\n{to_markdown(part)}" for title, part in parts)
        tex = "\n".join(f"% {tex_escape(title)}\n{to_latex(part)}" for title, part in parts)
    else:
        md, tex = to_markdown(table), to_latex(table)
    return ([out_dir / f"{name}.md", out_dir / f"{name}.csv", out_dir / f"{name}.tex"],
            [md, safe_csv(wide_table(table)), tex])


SEED_STD = "_seedstd"
# what a value of one run is, apart from its seed (the run id without its .seedN suffix)
_REPLICA_KEYS = ["run_id", "model", "preset", "dataset", "split", "resolution", "metric", "protocol", "n_images",
                 "feature_extractor", "higher_is_better", "kind"]


def seed_means(df: pd.DataFrame) -> pd.DataFrame:
    """The long rows of runs trained with several seeds (``vqbench run --seeds``: ``label``, ``label.seed1``,
    ...) as one run each: ``value`` the mean over its seeds, a row ``<metric>_seedstd`` with their sample
    standard deviation (n - 1), ``seed`` the seeds with a finite value (``0,1,2``). A value finite on one seed
    only, and a metric's own spread (``*_std``, ``*_se``), are left out. Empty when no run has a second seed."""
    from harness.core.results import unseeded
    if df.empty or "run_id" not in df:
        return df.iloc[0:0]
    rows = df[~df["metric"].str.contains("_std", regex=False) & ~df["metric"].str.endswith(STDERR)].copy()
    for c in _REPLICA_KEYS:
        rows[c] = rows[c].astype(object).where(rows[c].notna(), "") if c in rows else ""
    # the latest row of a value per replica (a re-evaluation replaces, never adds a seed)
    rows = rows.drop_duplicates(subset=_REPLICA_KEYS, keep="last")
    split = [unseeded(str(r)) for r in rows["run_id"]]
    rows["run_id"], rows["replica"] = [b for b, _ in split], [s for _, s in split]
    out = []
    for _, group in rows.groupby(_REPLICA_KEYS, sort=False, dropna=False):
        values = pd.to_numeric(group["value"], errors="coerce").astype(float)
        finite = group[values.notna() & values.abs().lt(math.inf)]
        if finite["replica"].nunique() < 2:
            continue
        latest = finite.iloc[-1].to_dict()
        values = values[finite.index]
        seeds = ",".join(map(str, sorted(finite["replica"])))          # the seeds the mean is over
        mean = dict(latest, value=float(values.mean()), seed=seeds, extra="{}")
        std = dict(mean, metric=latest["metric"] + SEED_STD, value=float(values.std(ddof=1)), higher_is_better=False)
        out += [mean, std]
    columns = [c for c in df.columns if c != "replica"]
    return pd.DataFrame(out, columns=columns) if out else df.iloc[0:0]


def check_out_dir(out_dir: str | Path) -> None:
    """Raise a one-line error when the report folder ``out_dir`` cannot be a folder (it is a file, or
    a parent of it is) or cannot be created."""
    out_dir = Path(out_dir)
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise VQBenchError(f"report folder {out_dir} is an existing file; pass --out a folder (it is "
                               "created when missing)")
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise file_error(e, out_dir, "create report folder") from None
