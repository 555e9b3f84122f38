"""benchmarks/train_speed.py (issue #15 item 1) in its --quick mode: every part of a tokenizer and a
generator training step is timed as a positive finite number and the Markdown tables are written."""
from __future__ import annotations

import pytest

from conftest import load_benchmark, positive_finite as positive


def load_script():
    return load_benchmark("train_speed")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_speed") / "train_speed_cpu.md"
    mod = load_script()
    return mod, out, mod.main(["--quick", "--out", str(out)])


def test_every_part_is_positive_and_finite(quick_run):
    mod, _, result = quick_run
    assert [r["preset"] for r in result["tokenizers"]] == ["vq-tiny"]
    assert [r["preset"] for r in result["generators"]] == ["ar-tiny @ vq-tiny"]
    for rows, names in ((result["tokenizers"], mod.TOK_PARTS), (result["generators"], mod.GEN_PARTS)):
        for r in rows:
            assert set(r["parts"]) == set(names)
            for k, v in r["parts"].items():
                assert positive(v), (r["preset"], k, v)
            for k in ("real", "real_median", "floor", "flops"):
                assert positive(r[k]), (r["preset"], k, r[k])
    assert positive(result["machine"]["threads"])


def test_table_is_written(quick_run):
    mod, out, result = quick_run
    assert result["out"] == str(out)
    text = out.read_text()
    assert "## Tokenizers" in text and "## Generators" in text
    assert "| vq-tiny |" in text and "| ar-tiny @ vq-tiny |" in text
    assert "Load average before starting" in text and "torch" in text
    header = next(line for line in text.splitlines() if line.startswith("| preset"))
    for col in ("step ms (real loop)", "floor ms", "overhead %", "LPIPS fwd ms", "guard ms", "GFLOP/step"):
        assert col in header
