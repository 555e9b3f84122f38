"""The claims table (Markdown, CSV, LaTeX) and one figure per claim, written atomically beside the
suite's tables: claim | source | paper's number | vqbench's measurement | test | verdict | seeds."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.claims.claim import HOLDS, NOT_MEASURED, Outcome, Z
from harness.core.io import write_atomic
from harness.reporting.figures import new_figure, print_styled, plain_text, save_figure
from harness.reporting.tables import safe_csv, tex_cell, check_out_dir, md_escape

COLUMNS = ("claim", "source", "paper's number", "vqbench's measurement", "test", "verdict", "seeds", "note")
RULE = (f"Verdict rule, declared before the runs: a check q > t holds if q - {Z:g} se > t and does not "
        f"hold if q + {Z:g} se <= t (inconclusive between); se is the standard error of the mean over "
        "seeds, or with one seed the bootstrap (binomial for accuracies) standard error of its rows. A "
        "claim holds if every check holds and does not hold if any does not.")


def _number(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def measurement_text(outcome: Outcome) -> str:
    """The shown quantities as ``name = mean ± spread``: the std over seeds with several, the standard
    error of its rows with one (``± se``), none where there is no error estimate."""
    if outcome.verdict == NOT_MEASURED:
        return ""
    names = outcome.claim.shown or tuple(c.quantity for c in outcome.claim.checks)
    parts = []
    for name in names:
        e, seeds = outcome.quantities[name], outcome.per_seed[name]
        if len(seeds) > 1:
            sd = pd.Series(seeds).std()
            parts.append(f"{name} = {_number(e.value)} ± {_number(sd)} (std, {len(seeds)} seeds)")
        elif e.stderr is not None:
            parts.append(f"{name} = {_number(e.value)} ± {_number(e.stderr)} (se)")
        else:
            parts.append(f"{name} = {_number(e.value)}")
    return "; ".join(parts)


def test_text(outcome: Outcome) -> str:
    checks = outcome.claim.checks
    if not outcome.check_verdicts:
        return "; ".join(c.text() for c in checks)
    return "; ".join(f"{c.text()}: {v}" for c, v in zip(checks, outcome.check_verdicts))


def claims_frame(outcomes: list[Outcome]) -> pd.DataFrame:
    return pd.DataFrame([{
        "claim": o.claim.statement, "source": o.claim.source, "paper's number": o.claim.paper_value,
        "vqbench's measurement": measurement_text(o), "test": test_text(o), "verdict": o.verdict,
        "seeds": f"{o.seeds_measured} of {o.claim.seeds}", "note": o.note} for o in outcomes], columns=COLUMNS)


def to_markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body, "", md_escape(RULE)]) + "\n"


def to_latex(df: pd.DataFrame) -> str:
    spec = "p{3.2cm}p{2.2cm}p{3.2cm}p{4cm}p{2.6cm}lll"
    lines = [f"% {tex_cell(RULE)}", r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(tex_cell(c) for c in COLUMNS) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_cell(v).replace("±", r"$\pm$") for v in row) + r" \\"
              for row in df.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


@print_styled
def plot_claim(outcome: Outcome, path: Path) -> list[Path]:
    """The claim's shown quantities as points with 2-se bars (or the seeds' spread), checks' thresholds
    dashed, and the verdict in the title."""
    names = list(outcome.claim.shown or (c.quantity for c in outcome.claim.checks))
    fig, axes = new_figure(len(names), width=max(3.5, 1.9 * len(names)))
    thresholds = {c.quantity: c.threshold for c in outcome.claim.checks}
    for ax, name in zip(axes, names):
        e, seeds = outcome.quantities[name], outcome.per_seed[name]
        err = Z * e.stderr if e.stderr is not None else 0.0
        ax.errorbar([0], [e.value], yerr=[err], fmt="o", color="C0" if outcome.verdict == HOLDS else "C3", capsize=4)
        if len(seeds) > 1:
            ax.plot([0] * len(seeds), seeds, "x", color="0.4")
        if name in thresholds:
            ax.axhline(thresholds[name], color="0.3", ls="--", lw=1)
        ax.set_xticks([])
        ax.set_title(plain_text(name), fontsize=7)
    fig.suptitle(plain_text(f"{outcome.claim.name}: {outcome.verdict}"), fontsize=8)
    return save_figure(fig, path)


def write_claims(outcomes: list[Outcome], out_dir: str | Path, name: str = "claims") -> list[Path]:
    """``name``.md / .csv / .tex and ``name``_<claim>.pdf/.png for each measured claim; returns the paths
    (Markdown first)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    df = claims_frame(outcomes)
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.csv", out_dir / f"{name}.tex"]
    for path, text in zip(paths, (to_markdown(df), safe_csv(df), to_latex(df))):
        write_atomic(path, text.encode("utf-8"))
    for o in outcomes:
        if o.verdict != NOT_MEASURED:
            paths += plot_claim(o, out_dir / f"{name}_{o.claim.name}")
    return paths
