"""The main job's convergence criterion: training PSNR rise over the last fifth, from the logged pixel loss."""
from __future__ import annotations

import math

import pytest

from harness.reporting.convergence import THRESHOLD_DB, convergence_table, psnr_rise_last_fifth

from conftest import run_cli


def test_rise_compares_the_last_fifth_with_the_fourth():
    curve = [(s, 0.04) for s in range(10, 161, 10)] + [(s, 0.02) for s in range(170, 201, 10)]
    # fourth fifth (120, 160]: 0.04; last (160, 200]: 0.02 -> 10 log10(2) dB
    assert psnr_rise_last_fifth(curve, 200) == pytest.approx(10 * math.log10(2))
    flat = [(s, 0.03) for s in range(10, 201, 10)]
    assert psnr_rise_last_fifth(flat, 200) == pytest.approx(0.0) and 0.0 < THRESHOLD_DB
    assert math.isnan(psnr_rise_last_fifth([], 200))


def test_table_lists_a_trained_tokenizer(tmp_path):
    r = run_cli("train", "vq-tiny", "--dataset", "procedural", "--quiet", "--run-dir", tmp_path / "runs" / "vq-tiny",
                "--set", "steps=10", "--set", "batch_size=4", "--set", "log_every=1", "--set", "perceptual_weight=0",
                "--set", "disc_weight=0")
    assert r.returncode == 0, r.stderr
    table = convergence_table(tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| vq-tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "10" and cells[3] in ("yes", "no") and math.isfinite(float(cells[2]))
