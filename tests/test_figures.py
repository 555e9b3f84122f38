"""Figures (harness/figures.py): each kind written as non-empty PDF + PNG, drawn from the right rows,
and `vqbench report` writing them next to the tables."""
import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.evaluation.entropy import conditional_entropies
from harness.models.catalog import preset_schedule
from harness.reporting.figures import (plot_schedules, profiles_from_rows, progressive_curves,
                             render_figures, usage_points)
from harness.core.results import ResultsStore, make_rows
from harness.models.schedules import codebook_schedule


def _run(run_id, preset, model, split="test"):
    return {"run_id": run_id, "kind": "tokenizer", "model": model, "preset": preset, "config_hash": "h",
            "dataset": "procedural", "split": split, "resolution": 32, "seed": 0, "started_at": "2026-01-01"}


def _assert_written(paths, stem):
    assert sorted(p.name for p in paths) == [f"{stem}.pdf", f"{stem}.png"]
    pdf, png = sorted(paths)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def _rows():
    rows = []
    # codebook usage of two families at two sizes (vq-tiny: K = 64 from the run's self-description; one row
    # says K itself)
    rows += make_rows(_run("vq-a", "vq-tiny", "vq"), {"codebook_usage": 0.9}, {"codebook_usage": True}, n_images=100,
                      extra={"run_info": {"codebook_size": 64}})
    rows += make_rows(_run("vq-b", "vq-tiny", "vq"), {"codebook_usage": 0.5}, {"codebook_usage": True}, n_images=100,
                      extra={"codebook_size": 1024})
    rows += make_rows(_run("vq-b", "vq-tiny", "vq"), {"codebook_usage": 0.2}, {"codebook_usage": True},
                      "llamagen", n_images=100)                                  # legacy: not plotted
    # progressive curves with the progressive.py convention
    for run_id, total, unit in (("vq-a", 64, "positions"), ("cvq-a", 16, "channels")):
        for k in (1, 4, total):
            rows += make_rows(_run(run_id, "vq-tiny", "vq"), {"progressive_psnr": 10 + k / total},
                              {"progressive_psnr": True}, n_images=100,
                              extra={"k": k, "k_total": total, "unit": unit, "metric_source": "psnr"})
    # an entropy curve as `analyze entropy --results` records it
    x = np.random.default_rng(0).integers(0, 16, (500, 6))
    profile = conditional_entropies(x, 16)
    for r in profile.table():
        rows += make_rows(_run("vq-a", "vq-tiny", "vq", split="train"), {"cond_entropy_bits": r["conditional_entropy_bits"]},
                          {"cond_entropy_bits": False}, n_images=500,
                          extra={"k": r["t"], "unit": "position", "codebook_size": 16, "threshold_bits": 1.0,
                                 "distinct_prefixes": r["distinct_prefixes"]})
    return rows, profile


def test_row_readers_follow_the_conventions():
    rows, profile = _rows()
    df = pd.DataFrame(rows)
    assert usage_points(df) == {"vq": [(64, 0.9), (1024, 0.5)]}
    curves = progressive_curves(df)
    assert list(curves) == ["progressive_psnr"]
    assert curves["progressive_psnr"]["cvq-a (channels)"] == [(1 / 16, 10 + 1 / 16), (0.25, 10.25), (1.0, 11.0)]
    rebuilt, = profiles_from_rows(df).values()
    np.testing.assert_allclose(rebuilt.conditional_entropy, profile.conditional_entropy)
    assert rebuilt.t_star == profile.t_star and rebuilt.bound_t_star == profile.bound_t_star
    assert render_figures(df.iloc[0:0], "/nonexistent") == []                 # no rows: no figures
    assert preset_schedule("vq-tiny") is None and len(set(preset_schedule("vcq-tiny"))) > 1


def test_schedule_figure(tmp_path):
    sizes = {s: codebook_schedule(s, 2, 16384, 256) for s in ("constant", "linear", "cosine")}
    _assert_written(plot_schedules(sizes, tmp_path / "schedules", dataset_size=1_281_167), "schedules")


def test_report_cli_writes_figures_next_to_the_tables(tmp_path, capsys):
    rows, _ = _rows()
    sizes = list(preset_schedule("vcq-tiny"))          # the run describes its K_t schedule in its rows
    rows += make_rows(_run("vcq", "vcq-tiny", "vcq"), {"codebook_usage": 0.7}, {"codebook_usage": True}, n_images=10,
                      extra={"run_info": {"codebook_size": max(sizes), "codebook_sizes": sizes}})
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append(rows)
    assert main(["report", str(store.path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    names = {p.name for p in (tmp_path / "out").iterdir()}
    figures = [p for p in (tmp_path / "out").iterdir() if p.suffix in (".pdf", ".png")]
    for stem in ("results_entropy", "results_codebook_usage", "results_progressive", "results_schedules"):
        _assert_written([p for p in figures if p.stem == stem], stem)        # vcq-tiny: a K_t schedule
        assert f"{stem}.png" in printed
    assert {"results.md", "results_curves.csv"} <= names
    curves = pd.read_csv(tmp_path / "out" / "results_curves.csv")
    assert set(curves.metric) == {"progressive_psnr", "cond_entropy_bits"}   # curves stay out of the wide table
    assert "cond_entropy_bits" not in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("bad", [{}, {"k": 1}])
def test_progressive_rows_without_k_or_total_are_skipped(bad):
    row = make_rows(_run("r", "vq-tiny", "vq"), {"progressive_psnr": 1.0}, {"progressive_psnr": True},
                    n_images=1, extra=bad)
    assert progressive_curves(pd.DataFrame(row)) == {}
    assert json.loads(row[0]["extra"]) == bad
