import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from harness.core import results
from harness.core.errors import VQBenchError
from harness.reporting.tables import footnotes, render, tex_escape, to_latex, to_markdown, wide_table
from harness.core.results import ROW_COLUMNS, ResultsStore, make_rows

HIB = {"psnr": True, "ssim": True, "codebook_usage": True, "rfid": False, "probe_top1_all": True}


def run(run_id="r1", **kw):
    return {"run_id": run_id, "kind": "tokenizer", "model": "vq", "preset": "vq-tiny", "config_hash": "h",
            "dataset": "fmnist", "split": "test", "resolution": 28, "seed": 0, "started_at": "t0"} | kw


def rows(run_id="r1", metrics=None, protocol="canonical", n=100, **kw):
    metrics = metrics or {"psnr": 20.0}
    return make_rows(run(run_id, **kw), metrics, HIB, protocol, n_images=n)


# ------------------------------------------------------------------------------------------ store
def test_round_trip_keeps_columns_types_and_nan_reason(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    assert store.read().empty and list(store.read().columns) == list(ROW_COLUMNS)
    new = make_rows(run(), {"psnr": 23.5, "rfid": float("nan")}, HIB, {"psnr": "llamagen", "rfid": "canonical"},
                    n_images={"psnr": 100, "rfid": 50}, feature_extractor={"psnr": "", "rfid": "inception"},
                    extra={"cfg": 1.5}, reasons={"rfid": "no Inception weights"})
    store.append(new)
    df = store.read()
    assert list(df.columns) == list(ROW_COLUMNS) and len(df) == 2
    psnr, rfid = df.iloc[0], df.iloc[1]
    assert (psnr.metric, psnr.value, psnr.protocol, psnr.n_images, bool(psnr.higher_is_better)) == \
           ("psnr", 23.5, "llamagen", 100, True)
    assert pd.isna(rfid.value) and rfid.feature_extractor == "inception" and not rfid.higher_is_better
    assert json.loads(rfid.extra) == {"cfg": 1.5, "reason": "no Inception weights"}
    assert json.loads(store.path.read_text().splitlines()[1])["value"] is None    # null, not NaN
    assert psnr.package_versions == results.package_versions() and "torch=" in psnr.package_versions


def test_crash_during_replacement_keeps_the_old_file(tmp_path, monkeypatch):
    # appends write in place (a crash leaves at most a torn last line: test_results_store_reliability)
    store = ResultsStore(tmp_path / "res.jsonl")
    store.append(rows())
    before = store.path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk gone")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        store.replace_run("r1", rows(metrics={"psnr": 1.0}))
    assert store.path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))                    # the temporary file is cleaned up


def test_append_keeps_existing_bytes_and_adds_a_missing_newline(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    store.append(rows())
    store.path.write_bytes(store.path.read_bytes().rstrip(b"\n"))     # e.g. edited by hand
    store.append(rows("r2"))
    assert list(store.read().run_id) == ["r1", "r2"]


def test_has_and_replace_run(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    store.append(rows("r1", {"psnr": 20.0, "ssim": 0.5}) + rows("r1", {"psnr": 21.0}, protocol="llamagen", split="val"))
    store.append(rows("r2", {"rfid": float("nan")}))
    assert store.has("r1") and store.has("r1", "ssim") and store.has("r1", "psnr", "llamagen")
    assert not store.has("r1", "rfid") and not store.has("r3") and not store.has("r2", "psnr")
    assert store.has("r2", "rfid")                              # a recorded NaN counts as done
    assert store.has("r1", "psnr", split="val") and not store.has("r1", "ssim", split="val")

    store.replace_run("r1", rows("r1", {"psnr": 25.0}), where={"split": "test"})
    df = store.read()
    assert sorted(zip(df.run_id, df.split, df.metric, df.value.fillna(-1))) == \
           [("r1", "test", "psnr", 25.0), ("r1", "val", "psnr", 21.0), ("r2", "test", "rfid", -1)]
    store.append(rows("r1", {"probe_top1_all": 0.7}))
    store.replace_run("r1", rows("r1", {"psnr": 26.0}), where={"split": "test"}, metrics={"psnr"})
    df = store.read()
    r1 = df[(df.run_id == "r1") & (df.split == "test")]
    assert sorted(zip(r1.metric, r1.value)) == [("probe_top1_all", 0.7), ("psnr", 26.0)]    # probe row kept
    store.replace_run("r1", [])
    assert list(store.read().run_id) == ["r2"]
    with pytest.raises(VQBenchError, match="rows of other runs"):
        store.replace_run("r2", rows("r1"))


def test_corrupt_line_names_file_and_line(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    store.append(rows())
    with open(store.path, "a") as f:
        f.write("\n{not json\n")                          # blank lines still count for the number
    with pytest.raises(VQBenchError, match=r"res.jsonl:3 is not valid JSON"):
        store.read()
    store.path.write_text('{"run_id": "r1"}\n')
    with pytest.raises(VQBenchError, match=r"res.jsonl:1 is not a results row"):
        store.has("r1")


def test_invalid_rows_are_rejected_before_writing(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    good = rows()[0]
    with pytest.raises(VQBenchError, match="lacks metric"):
        store.append([{k: v for k, v in good.items() if k != "metric"}])
    with pytest.raises(VQBenchError, match="unknown columns typo"):
        store.append([good | {"typo": 1}])
    with pytest.raises(VQBenchError, match="kind must be"):
        store.append([good | {"kind": "tokeniser"}])
    with pytest.raises(VQBenchError, match="not a number"):
        store.append([good | {"value": "high"}])
    assert not store.path.exists()
    with pytest.raises(VQBenchError, match="lacks seed"):
        make_rows({k: v for k, v in run().items() if k != "seed"}, {"psnr": 1.0}, HIB, n_images=1)
    with pytest.raises(VQBenchError, match="no protocol given for metric 'ssim'"):
        make_rows(run(), {"psnr": 1.0, "ssim": 0.5}, HIB, {"psnr": "canonical"}, n_images=1)
    with pytest.raises(VQBenchError, match="not run-level"):
        make_rows(run() | {"metric": "psnr"}, {"psnr": 1.0}, HIB, n_images=1)
    with pytest.raises(VQBenchError, match="must exist|does not exist"):
        store.read(must_exist=True)


def test_rows_from_pandas_can_be_written_back(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    store.append(rows())
    again = store.read().to_dict("records")                 # numpy scalars, NaN-free here
    ResultsStore(tmp_path / "copy.jsonl").append(again)
    assert ResultsStore(tmp_path / "copy.jsonl").read().equals(store.read())


def test_git_sha_never_fails(monkeypatch):
    def no_git(*a, **k):
        raise FileNotFoundError("git")
    results.git_sha.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    try:
        assert results.git_sha() == ""
    finally:
        results.git_sha.cache_clear()


# ----------------------------------------------------------------------------------------- report
def long_frame():
    return pd.DataFrame(
        rows("r1", {"psnr": 20.0, "ssim": 0.5, "rfid": 9.0})
        + rows("r1", {"psnr": 21.0}, protocol="llamagen")
        + rows("r2", {"rfid": 5.0, "psnr": 30.0}, preset="vq_b")
        + rows("r3", {"ssim": 0.7}, model="cvq", preset="cvq-tiny"))


def test_wide_table_puts_values_in_their_cells():
    wide = wide_table(long_frame())
    assert list(wide.columns) == ["model", "preset", "dataset", "split", "resolution", "seed", "run_id",
                                  "psnr ↑", "ssim ↑", "rfid ↓", "psnr [llamagen] ↑"]
    assert list(wide.run_id) == ["r1", "r2", "r3"]
    cells = wide.set_index("run_id")
    assert cells.loc["r1", ["psnr ↑", "ssim ↑", "rfid ↓", "psnr [llamagen] ↑"]].tolist() == [20.0, 0.5, 9.0, 21.0]
    assert cells.loc["r2", ["psnr ↑", "rfid ↓"]].tolist() == [30.0, 5.0] and pd.isna(cells.loc["r2", "ssim ↑"])
    assert cells.loc["r3", "model"] == "cvq" and cells.loc["r3", "ssim ↑"] == 0.7
    assert cells.loc["r3", ["psnr ↑", "rfid ↓", "psnr [llamagen] ↑"]].isna().all()


def test_duplicate_cells_keep_the_last_row():
    wide = wide_table(pd.DataFrame(rows("r1", {"psnr": 20.0}) + rows("r1", {"psnr": 22.0})))
    assert wide["psnr ↑"].tolist() == [22.0]


def test_protocols_and_varying_facts_split_columns():
    df = pd.DataFrame(rows("r1", {"psnr": 20.0, "ssim": 0.5}, n=100)
                      + rows("r2", {"psnr": 21.0, "ssim": 0.6}, n=100)
                      + rows("r3", {"psnr": 22.0}, n=50)
                      + rows("r3", {"ssim": 0.9}, protocol="llamagen", n=50))
    wide = wide_table(df)
    metric_columns = list(wide.columns[7:])
    assert metric_columns == ["psnr [N=100] ↑", "ssim ↑", "psnr [N=50] ↑", "ssim [llamagen] ↑"]
    assert wide["psnr [N=50] ↑"].tolist()[2] == 22.0 and wide["psnr [N=100] ↑"].isna().tolist() == [False, False, True]
    notes = footnotes(df)
    assert "N (images evaluated): 100 for ssim ↑; 50 for ssim [llamagen] ↑." in notes
    assert any(n.startswith("[llamagen]: ") for n in notes) and any(n.startswith("canonical") for n in notes)
    assert "Every row: dataset fmnist, split test, resolution 28, seed 0." in notes

    constant = footnotes(pd.DataFrame(rows("r1", {"psnr": 1.0, "rfid": 2.0}, n=5000)))
    assert "N (images evaluated): 5,000 in every column." in constant


def test_markdown_has_legend_arrows_bold_and_footnotes():
    md = to_markdown(long_frame())
    lines = md.splitlines()
    assert lines[0].startswith("↑ higher is better, ↓ lower is better")
    header = next(ln for ln in lines if ln.startswith("| model"))
    assert header == "| model | preset | run_id | psnr ↑ | ssim ↑ | rfid ↓ | psnr [llamagen] ↑ |"  # shared context folded
    r1 = next(ln for ln in lines if "| r1 |" in ln)
    assert r1 == "| vq | vq-tiny | r1 | 20.00 | 0.5000 | 9.000 | 21.00 |"     # one decimals count per column
    r2 = next(ln for ln in lines if "| r2 |" in ln)
    assert "**30.00**" in r2 and "**5.000**" in r2 and "| — |" in r2
    assert "N (images evaluated): 100 in every column." in lines


def test_number_formatting():
    md = to_markdown(pd.DataFrame(rows("r1", {"psnr": 23.4123, "ssim": 0.81234, "codebook_usage": 0.95121})))
    assert "| 23.41 | 0.8123 | 0.9512 |" in md


def test_latex_bolds_best_per_column_by_direction_and_escapes():
    tex = to_latex(long_frame())
    assert r"\begin{tabular}{lllrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"psnr $\uparrow$ & ssim $\uparrow$ & rfid $\downarrow$ & psnr [llamagen] $\uparrow$ \\" in tex
    assert r"run\_id" in tex and r"vq\_b" in tex
    row = {ln.split(" & ")[2]: ln for ln in tex.splitlines() if ln.startswith(("vq &", "cvq &"))}
    assert row["r2"] == r"vq & vq\_b & r2 & \textbf{30.00} & -- & \textbf{5.000} & -- \\"   # rfid: lower wins
    assert row["r1"] == r"vq & vq-tiny & r1 & 20.00 & 0.5000 & 9.000 & 21.00 \\"     # single llamagen value: plain
    assert row["r3"] == r"cvq & cvq-tiny & r3 & -- & \textbf{0.7000} & -- & -- \\"
    assert all(ln.startswith("%") for ln in tex.split(r"\begin{tabular}")[0].splitlines())


def test_latex_ties_are_all_bold_and_specials_escaped():
    df = pd.DataFrame(rows("a&b", {"psnr": 20.001}) + rows("100%_c", {"psnr": 20.0}))
    tex = to_latex(df)
    assert tex.count(r"\textbf{20.00}") == 2                   # equal as displayed
    assert r"a\&b" in tex and r"100\%\_c" in tex
    assert tex_escape(r"a\b{c}~^#$") == r"a\textbackslash{}b\{c\}\textasciitilde{}\textasciicircum{}\#\$"


def test_render_writes_three_files_atomically(tmp_path):
    md, csv, tex = render(long_frame(), tmp_path / "out", name="tab")
    assert [p.name for p in (md, csv, tex)] == ["tab.md", "tab.csv", "tab.tex"]
    assert md.read_text() == to_markdown(long_frame()) and tex.read_text() == to_latex(long_frame())
    wide = pd.read_csv(csv)
    assert list(wide.columns) == list(wide_table(long_frame()).columns)      # CSV keeps every key
    assert wide.set_index("run_id").loc["r1", "psnr [llamagen] ↑"] == 21.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tab.csv", "tab.md", "tab.tex"]

    empty = render(pd.DataFrame(columns=list(ROW_COLUMNS)), tmp_path / "empty")
    assert empty[0].read_text() == "no results yet\n" and empty[2].read_text().startswith("%")


def test_concurrent_appends_lose_no_rows(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    store = ResultsStore(tmp_path / "res.jsonl")

    def write(i):
        for j in range(5):
            ResultsStore(store.path).append(rows(f"r{i}-{j}"))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    assert len(store.read()) == 20 and sorted(p.name for p in tmp_path.iterdir()) == ["res.jsonl"]


def test_render_gives_each_kind_its_table_and_curves_their_own_csv(tmp_path):
    gen = make_rows(run("g1", kind="generator", model="ar", preset="ar-tiny"), {"gfid": 30.0}, {"gfid": False},
                    "adm", n_images=500)
    curve = [r | {"metric": "progressive_psnr", "value": 10.0 + k,
                  "extra": json.dumps({"k": k, "k_total": 4, "unit": "positions"})}
             for k in (1, 2, 4) for r in rows("r1")]
    df = pd.DataFrame(rows("r1", {"psnr": 20.0}) + gen + curve)
    md, csv, tex, curves = render(df, tmp_path)
    text = md.read_text()
    assert "## Tokenizers" in text and "## Generators" in text
    tok_part, gen_part = text.split("## Generators")
    assert "psnr ↑" in tok_part and "gfid" not in tok_part and "gfid [adm] ↓" in gen_part
    assert "progressive_psnr" not in text                           # a curve is no table column
    long = pd.read_csv(curves)
    assert long["k"].tolist() == [1, 2, 4] and long["value"].tolist() == [11.0, 12.0, 14.0]
    assert "% Generators" in tex.read_text()


def test_seed_means_of_replicas_only_latest_rows():
    """A run with seeds 0, 1, 2 becomes one row: mean and sample std of its latest value per seed; a run of one
    seed and a metric's own spread (gkid_std) stay out of the seeds table."""
    from harness.reporting.tables import seed_means
    specs = [("s/a", 20.0), ("s/a.seed1", 21.0), ("s/a.seed2", 25.0), ("s/a.seed2", 23.0), ("s/b", 30.0)]
    long = [r for run_id, v in specs for r in rows(run_id, {"psnr": v})]
    long += [r for run_id in ("s/a", "s/a.seed1")
             for r in make_rows(run(run_id), {"gkid_std": 0.1}, {"gkid_std": False}, "canonical", n_images=100)]
    df = pd.DataFrame(long)
    out = seed_means(df).set_index("metric")
    assert set(out["run_id"]) == {"s/a"} and set(out.index) == {"psnr", "psnr_seedstd"}
    assert out.loc["psnr", "value"] == pytest.approx(np.mean([20, 21, 23]))
    assert out.loc["psnr_seedstd", "value"] == pytest.approx(np.std([20, 21, 23], ddof=1))
    assert out.loc["psnr", "seed"] == "0,1,2"
    assert seed_means(df[df["run_id"] == "s/b"]).empty
