"""Reports are safe to open (issue #13): text from the rows cannot run as a spreadsheet formula in
results.csv, inject HTML or break the table in results.md, break results.tex (specials, line breaks in
cells, headers and % footnotes), or reach matplotlib's mathtext parser in the figures."""
import csv
import io
import json

import matplotlib
import pandas as pd
import pytest

from harness.core.results import make_rows
from harness.reporting import figures
from harness.reporting.tables import csv_safe, md_escape, render, tex_escape, to_latex, to_markdown

EVIL = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx"]


def _run(run_id, **kw):
    return {"run_id": run_id, "kind": "tokenizer", "model": "vq", "preset": "vq-tiny", "config_hash": "h",
            "dataset": "fmnist", "split": "test", "resolution": 28, "seed": 0, "started_at": "t0"} | kw


def _rows(run_id, metrics, **kw):
    protocol = kw.pop("protocol", "canonical")
    n = kw.pop("n", 100)
    fe = kw.pop("fe", "")
    return make_rows(_run(run_id, **kw), metrics, {m: True for m in metrics}, protocol, n_images=n,
                     feature_extractor=fe)


# ------------------------------------------------------------------------------------------------ CSV
def test_csv_safe_neutralises_text_only():
    for text in EVIL:
        assert csv_safe(text) == "'" + text
    assert csv_safe("vq-tiny") == "vq-tiny" and csv_safe("") == ""
    assert csv_safe(-0.5) == -0.5 and csv_safe(-3) == -3            # numbers are never touched


def test_csv_formula_cells_and_headers_neutralised_numbers_kept(tmp_path):
    df = pd.DataFrame(
        _rows("=HYPERLINK(\"http://x\")", {"psnr": -0.5}, model="@SUM(A1)", preset="+p", dataset="-d", seed=-1)
        + _rows("ok", {"psnr": 20.0}, model="\tm", preset="\rp", dataset="-d", seed=-1)
        + _rows("=m", {"=cmd|' /C calc'!A0": 1.5}, model="vq", preset="p", dataset="-d", seed=-1))
    _, csv_path, _ = render(df, tmp_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    cells = header + [c for row in body for c in row]
    risky = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
    assert not risky, risky
    assert "'=cmd|' /C calc'!A0 ↑" in header                          # a header from a metric name
    by_id = {row[header.index("run_id")]: dict(zip(header, row)) for row in body}
    assert set(by_id) == {"'=HYPERLINK(\"http://x\")", "ok", "'=m"}
    evil = by_id["'=HYPERLINK(\"http://x\")"]
    assert (evil["model"], evil["preset"], evil["dataset"]) == ("'@SUM(A1)", "'+p", "'-d")
    assert (by_id["ok"]["model"], by_id["ok"]["preset"]) == ("'\tm", "'\rp")
    # numbers stay numbers: a negative value and a negative seed are not quoted
    parsed = pd.read_csv(csv_path)
    assert parsed["psnr ↑"].dtype.kind == "f" and sorted(parsed["psnr ↑"].dropna()) == [-0.5, 20.0]
    assert parsed["seed"].tolist() == [-1, -1, -1] and parsed["resolution"].dtype.kind == "i"


def test_curves_csv_is_neutralised_too(tmp_path):
    curve = [r | {"metric": "progressive_psnr", "value": -1.0 - k, "extra": json.dumps({"k": k, "k_total": 4})}
             for k in (1, 2, 4) for r in _rows("=evil()", {"psnr": 1.0})]
    paths = render(pd.DataFrame(curve + _rows("a", {"psnr": 1.0})), tmp_path)
    curves = pd.read_csv(paths[3])
    assert set(curves["run_id"]) == {"'=evil()"} and curves["value"].tolist() == [-2.0, -3.0, -5.0]


# ------------------------------------------------------------------------------------------- Markdown
def test_markdown_escapes_html_pipes_and_newlines():
    assert md_escape("<script>a&b</script>|x\ny\r\nz\\") == r"&lt;script&gt;a&amp;b&lt;/script&gt;\|x y  z\\"
    df = pd.DataFrame(_rows("<img src=x onerror=alert(1)>", {"psnr": 20.0}, preset="a|b")
                      + _rows("line\nbreak\rrun", {"psnr": 21.0}, preset="p\u2028q")
                      + _rows("r3", {"psnr": 22.0}, protocol="<b>pro|to</b>", fe="fe\nx"))
    md = to_markdown(df)
    assert "<" not in md and ">" not in md.replace("&gt;", "")
    assert "&lt;img src=x onerror=alert(1)&gt;" in md
    lines = md.splitlines()
    header = next(ln for ln in lines if ln.startswith("| model"))
    table = lines[lines.index(header): lines.index(header) + 5]      # header, separator, three rows
    assert all(ln.startswith("| ") and ln.endswith(" |") for ln in [table[0], *table[2:]])
    # every row has as many unescaped cell separators as the header
    count = [ln.replace(r"\|", "").count("|") for ln in table]
    assert len(set(count)) == 1, table
    assert "| line break run |" in md and r"a\|b" in md and "p q" in md
    assert r"&lt;b&gt;pro\|to&lt;/b&gt;" in header                    # header from a protocol name
    notes = lines[lines.index(table[-1]) + 2:]
    assert notes and not any("\n" in n or "<" in n for n in notes)
    assert any("&lt;b&gt;pro\\|to&lt;/b&gt;" in n for n in notes)     # footnote from the protocol name


def test_markdown_kind_titles_and_footnotes_escaped(tmp_path):
    gen = make_rows(_run("g<1>", kind="generator", model="ar", preset="ar-tiny", dataset="ds\n# heading"),
                    {"gfid": 3.0}, {"gfid": False}, "adm", n_images=10)
    md, _, tex, *_ = render(pd.DataFrame(_rows("t", {"psnr": 1.0}, dataset="ds\n# heading") + gen), tmp_path)
    text = md.read_text()
    assert "g&lt;1&gt;" in text and "\n# heading" not in text and "ds # heading" in text
    assert all(not line.startswith("% ") or "\n" not in line for line in tex.read_text().splitlines())


# ---------------------------------------------------------------------------------------------- LaTeX
def test_tex_escape_is_complete():
    assert tex_escape(r"\{}$&#^_%~") == (r"\textbackslash{}\{\}\$\&\#\textasciicircum{}\_\%"
                                        r"\textasciitilde{}")
    assert tex_escape("a\nb\rc\td\u2028e") == "a b c d e"
    assert tex_escape("<x|y>") == r"\textless{}x\textbar{}y\textgreater{}"


def test_latex_cells_headers_and_footnotes_escaped():
    name = "100%_a\nb\\end{tabular}"
    df = pd.DataFrame(_rows(name, {"psnr": 20.0, "a_b#c": 1.0}, dataset="set%\n\\input{x}", preset="[0pt]p")
                      + _rows("r2", {"psnr": 21.0}, dataset="set%\n\\input{x}", preset="q", protocol="pro~to$",
                              fe="feat\nures"))
    tex = to_latex(df)
    preamble, table = tex.split(r"\begin{tabular}")
    # every footnote line is still a comment: the newline in the dataset name did not end it
    assert all(ln.startswith("% ") for ln in preamble.splitlines())
    assert r"set\% \textbackslash{}input\{x\}" in preamble
    assert r"\input{x}" not in tex
    body = table.splitlines()
    assert body[-1] == r"\end{tabular}" and tex.count(r"\end{tabular}") == 1
    rows = [ln for ln in body if ln.endswith(r" \\")]
    assert len(rows) == 3                                          # header + two runs, each on one line
    assert r"100\%\_a b\textbackslash{}end\{tabular\}" in rows[1]
    assert r"a\_b\#c $\uparrow$" in rows[0] and r"pro\textasciitilde{}to\$" in rows[0]
    assert rows[1].startswith(r"vq & {}[0pt]p & ")                  # [ after \\ is no optional argument
    assert len({ln.count(" & ") for ln in rows}) == 1              # no stray & from the data


# -------------------------------------------------------------------------------------------- figures
NAMES = [r"$\frac{", "a$b$c", "$x^$", r"$\frac{$", "_hidden"]


def _figure_rows(names):
    out = []
    for name in names:
        run = _run(name, model=name, preset=name, dataset="procedural")
        out += make_rows(run, {"codebook_usage": 0.5}, {"codebook_usage": True}, n_images=10,
                         extra={"codebook_size": 64, "run_info": {"codebook_sizes": [2, 4, 8, 16]}})
        for k in (1, 2, 4):
            out += make_rows(run, {"progressive_ps$nr^": 10.0 + k}, {"progressive_ps$nr^": True}, n_images=10,
                             extra={"k": k, "k_total": 4, "unit": "positions"})
        for t, h in enumerate((3.0, 2.0, 0.5, 0.0)):
            out += make_rows(run, {"cond_entropy_bits": h}, {"cond_entropy_bits": False}, n_images=100,
                             extra={"k": t, "codebook_size": 16, "threshold_bits": 1.0, "distinct_prefixes": 10})
    return pd.DataFrame(out)


def test_plain_text_never_parses_as_math():
    from matplotlib import cbook
    for name in NAMES + ["$$", "\\$", "a\\"]:
        shown = figures.plain_text(name)
        assert not cbook.is_math_text(shown)
        assert shown.replace(r"\$", "$").lstrip(" ") == name          # what matplotlib draws for non-math text


def test_figures_render_from_rows_named_like_math(tmp_path, monkeypatch):
    drawn = []
    save = figures.save_figure

    def keep(fig, path):
        drawn.append(fig)
        return save(fig, path)
    monkeypatch.setattr(figures, "save_figure", keep)
    with matplotlib.rc_context({"text.usetex": True}):         # a user's matplotlibrc cannot switch LaTeX on
        paths = figures.render_figures(_figure_rows(NAMES), tmp_path)
    assert {p.name for p in paths} >= {f"results_{f}.{e}" for f in ("entropy", "codebook_usage", "progressive",
                                                                     "schedules") for e in ("pdf", "png")}
    assert all(p.stat().st_size > 1000 for p in paths)
    texts = [t.get_text() for fig in drawn for ax in fig.axes for t in
             ([ax.title, ax.xaxis.label, ax.yaxis.label]
              + (ax.get_legend().get_texts() if ax.get_legend() else []))]
    legend = " ".join(texts)
    for name in NAMES:                                           # every run is in a legend, shown as written
        assert figures.plain_text(name) in legend
    assert "progressive ps\\$nr^" in texts                       # a title from a metric name


def test_old_label_would_have_crashed(tmp_path):
    # the guard the figures rely on: the raw name is a mathtext error, the escaped one draws
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure()
    FigureCanvasAgg(fig)
    fig.text(0.1, 0.1, "$x^$")
    with pytest.raises(ValueError):
        fig.savefig(io.BytesIO(), format="png")
    fig = Figure()
    FigureCanvasAgg(fig)
    fig.text(0.1, 0.1, figures.plain_text("$x^$"))
    fig.savefig(io.BytesIO(), format="png")


def test_markdown_names_cannot_make_links_images_or_code_spans():
    from harness.reporting.tables import md_escape
    for text in ("[click](http://evil)", "![x](http://evil/p.png)", "`rm -rf`"):
        out = md_escape(text)
        assert "](" not in out and "`" not in out.replace("\\`", ""), out
    assert md_escape("psnr [llamagen]") == "psnr [llamagen]"          # plain brackets stay readable
