"""benchmarks/sample_speed.py (issue #15 item 3) in its --quick mode: the KV-cached and uncached paths draw
the same samples, every rate is a positive finite number, and the two tables are written."""
from __future__ import annotations

import pytest

from conftest import load_benchmark, positive_finite as positive


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_speed") / "sample_speed_cpu.md"
    return out, load_benchmark("sample_speed").main(["--quick", "--reps", "1", "--out", str(out)])


def test_cached_and_uncached_sampling_agree_and_rates_are_positive(quick_run):
    _, result = quick_run
    # masked generators have no incremental path: only ar and car appear in the KV-cache table
    assert [r["pair"] for r in result["kv"]] == ["ar-tiny @ vq-tiny", "car-tiny @ cvq-tiny"]
    for r in result["kv"]:
        assert r["same_samples"], r
        assert positive(r["cached_per_s"]) and positive(r["uncached_per_s"]), r
    assert len(result["balanced"]) == 3
    for r in result["balanced"]:
        assert r["n"] == 20 and positive(r["images_per_s"]) and 0 < r["decode_share"] < 1, r


def test_tables_are_written(quick_run):
    out, result = quick_run
    text = out.read_text()
    assert result["out"] == str(out)
    assert "## KV-cached against uncached" in text and "## Class-balanced sampling" in text
    assert "| masked-tiny @ vq-tiny |" in text and "NO |" not in text
