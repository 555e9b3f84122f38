"""The main job's convergence criteria: training PSNR rise over the last fifth (with its standard error),
from the logged pixel loss, and the pairs of runs whose order the last fifth changes."""
from __future__ import annotations

import math

import pytest

from harness.reporting.convergence import (THRESHOLD_DB, TokenizerCurve, convergence_table, order_flips, pair_gap,
                                           psnr_rise_last_fifth, tokenizer_curves)

from conftest import run_cli


def test_rise_compares_the_last_fifth_with_the_fourth():
    curve = [(s, 0.04) for s in range(10, 161, 10)] + [(s, 0.02) for s in range(170, 201, 10)]
    # fourth fifth (120, 160]: 0.04; last (160, 200]: 0.02 -> 10 log10(2) dB, no spread inside a fifth
    rise, se = psnr_rise_last_fifth(curve, 200)
    assert rise == pytest.approx(10 * math.log10(2)) and se == pytest.approx(0.0)
    flat = [(s, 0.03) for s in range(10, 201, 10)]
    assert psnr_rise_last_fifth(flat, 200)[0] == pytest.approx(0.0) and 0.0 < THRESHOLD_DB
    assert all(math.isnan(v) for v in psnr_rise_last_fifth([], 200))


def test_the_standard_error_of_the_rise_follows_the_spread_of_the_batch_losses():
    # alternating 0.03 / 0.05 in both fifths: equal means (rise 0), sample std sqrt(2)*0.01 / sqrt(2) per
    # value pair; delta method: (10 / ln 10) * sqrt(2) * (se / mean)
    curve = [(s, 0.03 if s % 2 else 0.05) for s in range(1, 201)]
    rise, se = psnr_rise_last_fifth(curve, 200)
    values = [0.03, 0.05] * 20
    std = math.sqrt(sum((v - 0.04) ** 2 for v in values) / (len(values) - 1))
    assert rise == pytest.approx(0.0, abs=1e-12)
    assert se == pytest.approx(10 / math.log(10) * math.sqrt(2) * std / math.sqrt(40) / 0.04)
    # four times as many values per fifth halve it
    dense = [(s / 4, 0.03 if s % 2 else 0.05) for s in range(1, 801)]
    assert psnr_rise_last_fifth(dense, 200)[1] == pytest.approx(se / 2, rel=0.02)


def _run(label, loss4, loss5, steps=100, seed=0, wobble=0.0):
    """A run whose logged loss is loss4 in the fourth fifth and loss5 after, times (1 +- wobble) on
    alternate steps (batch difficulty: the same for every run at a step)."""
    return TokenizerCurve(label, steps, (32, 0, seed, 1, "{}"),
                          [(s, (loss4 if s <= 0.8 * steps else loss5) * (1 + wobble * (-1) ** s))
                           for s in range(1, steps + 1)])


def test_a_pair_flips_when_its_order_differs_between_the_fourth_and_the_last_fifth():
    fast, slow, steady = _run("fast", 0.04, 0.01), _run("slow", 0.03, 0.02), _run("steady", 0.05, 0.045)
    compared, flips = order_flips([fast, slow, steady])
    # fast is behind slow in the fourth fifth and ahead in the last; both stay ahead of steady
    assert compared == 3 and [(a, b) for a, b, _, _ in flips] == [("fast", "slow")]
    _, _, gap4, gap5 = flips[0]
    assert gap4.gap == pytest.approx(10 * math.log10(0.03 / 0.04)) and gap5.gap == pytest.approx(10 * math.log10(2))
    assert gap4.clear and gap5.clear                                   # no noise: any gap is clear
    # runs of other budgets or other batches are not compared
    assert order_flips([fast, _run("longer", 0.03, 0.02, steps=200)]) == (0, [])
    assert order_flips([fast, _run("reseeded", 0.03, 0.02, seed=1)]) == (0, [])


def test_the_pair_gap_pairs_steps_so_batch_difficulty_cancels():
    # both runs see the same hard and easy batches (+-50 %): the paired gap has no spread
    a, b = _run("a", 0.02, 0.02, wobble=0.5), _run("b", 0.04, 0.04, wobble=0.5)
    g = pair_gap(a, b, 4)
    assert g.gap == pytest.approx(10 * math.log10(2)) and g.se == pytest.approx(0.0, abs=1e-12)
    # a run whose difficulty does not follow the other's gets a spread, and a small gap is then not clear
    c = TokenizerCurve("c", 100, a.batches, [(s, 0.0205 * (1 + 0.5 * (-1) ** (s // 2))) for s in range(1, 101)])
    g = pair_gap(a, c, 4)
    assert g.se > 0.5 and not g.clear and abs(g.gap) < 0.5
    # fewer than two shared steps: no gap
    assert math.isnan(pair_gap(a, TokenizerCurve("d", 100, a.batches, [(100, 0.02)]), 4).gap)


def test_table_lists_trained_tokenizers_and_compares_them(tmp_path):
    for label, lr in (("vq-tiny", "1e-3"), ("vq-tiny-slow", "1e-5")):
        r = run_cli("train", "vq-tiny", "--dataset", "procedural", "--quiet", "--run-dir", tmp_path / "runs" / label,
                    "--set", "steps=10", "--set", "batch_size=4", "--set", "log_every=1", "--set", "perceptual_weight=0",
                    "--set", "disc_weight=0", "--set", f"lr={lr}")
        assert r.returncode == 0, r.stderr
    table = convergence_table(tmp_path)
    row = next(line for line in table.splitlines() if line.startswith("| vq-tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "10" and cells[2] == "2" and cells[5] in ("yes", "no")
    assert math.isfinite(float(cells[3])) and float(cells[4]) >= 0
    assert "of 2 runs with a log meet the per-run criterion." in table
    compared, flips = order_flips(tokenizer_curves(tmp_path))                  # same batches: compared
    assert compared == 1
    assert ("1 of 1 pair keeps its order" in table) == (not flips) and ("0 of 1 pair keeps" in table) == bool(flips)
