"""Render the long results store wide: one row per run, one column per metric.

Column headers carry the direction (``psnr ↑``) and, for non-canonical protocols, the protocol
(``psnr [llamagen] ↑``), so numbers computed differently never share a column. Each row shows the
protocol facts that make numbers comparable (dataset, split, resolution, N images, seed); when a
run's metrics used different N, the column header carries N instead. Markdown, CSV and LaTeX
(booktabs, best value per column in bold) are written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

ROW_KEYS = ["model", "preset", "dataset", "split", "resolution", "n_images", "seed", "run_id"]
UP, DOWN = "↑", "↓"


def column_name(metric: str, protocol: str, higher: bool) -> str:
    tag = "" if protocol in ("", "canonical") else f" [{protocol}]"
    return f"{metric}{tag} {UP if higher else DOWN}"


def wide_table(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame()
    df = df.copy()
    df["column"] = [column_name(m, p, bool(h)) for m, p, h in
                    zip(df["metric"], df["protocol"].fillna(""), df["higher_is_better"])]
    # keep the latest row when a run recorded the same metric twice
    df = df.drop_duplicates(subset=ROW_KEYS + ["column"], keep="last")
    order = list(dict.fromkeys(df["column"]))
    df[ROW_KEYS] = df[ROW_KEYS].fillna("")
    rows = list(dict.fromkeys(map(tuple, df[ROW_KEYS].itertuples(index=False))))
    wide = df.pivot(index=ROW_KEYS, columns="column", values="value")
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(rows, names=ROW_KEYS), columns=order).reset_index()
    wide.columns.name = None
    return wide.rename(columns={"n_images": "N"})


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _best(wide: pd.DataFrame, col: str):
    values = pd.to_numeric(wide[col], errors="coerce").dropna()
    if len(values) < 2:
        return None
    return values.max() if col.endswith(UP) else values.min()


def to_markdown(wide: pd.DataFrame) -> str:
    head = "| " + " | ".join(wide.columns) + " |"
    sep = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(wide[c]) else "---" for c in wide.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in wide.itertuples(index=False)]
    note = (f"{UP} higher is better, {DOWN} lower is better; N = evaluated images; metrics follow the "
            "canonical protocol unless the column names another.")
    return "\n".join([note, "", head, sep, *body]) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
    return s.replace("\x00", r"\textbackslash{}").replace(UP, r"$\uparrow$").replace(DOWN, r"$\downarrow$")


def to_latex(wide: pd.DataFrame) -> str:
    metric_cols = [c for c in wide.columns if c.endswith((UP, DOWN))]
    best = {c: _best(wide, c) for c in metric_cols}
    lines = [r"\begin{tabular}{" + "l" * (len(wide.columns) - len(metric_cols)) + "r" * len(metric_cols) + "}",
             r"\toprule", " & ".join(_tex_escape(str(c)) for c in wide.columns) + r" \\", r"\midrule"]
    for row in wide.itertuples(index=False):
        cells = []
        for col, v in zip(wide.columns, row):
            text = _tex_escape(_fmt(v))
            if col in best and best[col] is not None and isinstance(v, float) and v == best[col]:
                text = r"\textbf{" + text + "}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def render(df: pd.DataFrame, out_dir: str | Path, name: str = "results") -> list[Path]:
    """Write ``name``.md / .csv / .tex under ``out_dir``; returns their paths (Markdown first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wide = wide_table(df)
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.csv", out_dir / f"{name}.tex"]
    _write(paths[0], to_markdown(wide) if not wide.empty else "no results yet\n")
    _write(paths[1], wide.to_csv(index=False))
    _write(paths[2], to_latex(wide) if not wide.empty else "% no results yet\n")
    return paths
