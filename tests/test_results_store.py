import json
import os

import pandas as pd
import pytest

from harness.errors import VQBenchError
from harness.report import render, wide_table
from harness.results import ROW_COLUMNS, ResultsStore


def row(run="r1", metric="psnr", value=20.0, hib=True, protocol="canonical", n=100, preset="vq-tiny"):
    base = {c: "" for c in ROW_COLUMNS}
    return base | {"run_id": run, "kind": "tokenizer", "model": "vq", "preset": preset, "dataset": "fmnist",
                   "split": "test", "resolution": 28, "n_images": n, "seed": 0, "metric": metric,
                   "value": value, "higher_is_better": hib, "protocol": protocol, "extra": "{}"}


def test_append_read_replace(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    assert store.read().empty and list(store.read().columns) == list(ROW_COLUMNS)
    store.append([row(), row(metric="ssim", value=0.5)])
    store.append([row(run="r2", value=float("nan"))])
    df = store.read()
    assert len(df) == 3 and df["value"].isna().sum() == 1
    store.replace_run("r1", [row(value=25.0)])
    df = store.read()
    assert sorted(df.run_id) == ["r1", "r2"] and df[df.run_id == "r1"].value.item() == 25.0


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "res.jsonl")
    store.append([row()])
    before = store.path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk gone")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.append([row(run="r2")])
    assert store.path.read_bytes() == before


def test_bad_rows_and_corrupt_lines(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    with pytest.raises(VQBenchError, match="lacks metric"):
        store.append([{k: v for k, v in row().items() if k != "metric"}])
    store.append([row()])
    with open(store.path, "a") as f:
        f.write("{not json\n")
    with pytest.raises(VQBenchError, match=r"res.jsonl:2 is not valid JSON"):
        store.read()


def test_wide_table_pivots_and_separates_protocols():
    df = pd.DataFrame([row(), row(metric="ssim", value=0.5), row(metric="psnr", value=21.0, protocol="llamagen"),
                       row(run="r2", preset="vq-b", value=30.0), row(run="r2", preset="vq-b", metric="ssim", value=0.7)])
    wide = wide_table(df)
    assert list(wide.columns[-3:]) == ["psnr ↑", "ssim ↑", "psnr [llamagen] ↑"]
    r1 = wide[wide.run_id == "r1"].iloc[0]
    assert (r1["psnr ↑"], r1["ssim ↑"], r1["psnr [llamagen] ↑"]) == (20.0, 0.5, 21.0)
    r2 = wide[wide.run_id == "r2"].iloc[0]
    assert r2["psnr ↑"] == 30.0 and pd.isna(r2["psnr [llamagen] ↑"])
    assert "N" in wide.columns


def test_render_markdown_csv_latex_with_bold_best(tmp_path):
    df = pd.DataFrame([row(value=20.0), row(metric="rfid", value=5.0, hib=False),
                       row(run="r_2", value=30.0), row(run="r_2", metric="rfid", value=9.0, hib=False)])
    md, csv, tex = render(df, tmp_path)
    text = md.read_text()
    assert "| psnr ↑ | rfid ↓ |" in text and "30" in text
    assert pd.read_csv(csv).shape[0] == 2
    latex = tex.read_text()
    assert r"\textbf{30}" in latex and r"\textbf{5}" in latex           # best respects the direction
    assert r"\textbf{20}" not in latex and r"\textbf{9}" not in latex
    assert r"r\_2" in latex and r"$\uparrow$" in latex and r"\toprule" in latex
