"""The CLI front door and the resumable suite runner."""
import json

import pytest

from conftest import REPO, run_cli
from harness.cli import main
from harness.suites import run_suite


def test_list_params_and_settings(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("tokenizers", "generators", "metrics", "datasets", "suites"):
        assert kind in out
    assert "vq-f16-imagenet" in out and "fashion-mnist" in out and "smoke" in out
    assert main(["params", "vq-f16-imagenet"]) == 0
    assert "71,883,403 parameters" in capsys.readouterr().out
    assert main(["params", "vq-f16-imagenet", "--set", "codebook_size=1024"]) == 0
    assert "71,760,523" in capsys.readouterr().out            # 15,360 fewer codes of dim 8
    assert main(["train", "vq-tiny", "--run-dir", "unused", "--help-settings"]) == 0
    out = capsys.readouterr().out
    assert "codebook_size = 64" in out and "lr = 0.0001" in out


def test_help_explains_every_command():
    for cmd in ("list", "params", "train", "eval", "run", "report"):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and "usage: vqbench " + cmd in r.stdout
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "run_all.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "--suite" in r.stdout


def test_tiny_suite_runs_resumes_and_reports(tmp_path, capsys):
    table = run_suite("tiny", tmp_path, progress=False)
    text = table.read_text()
    assert "vq-tiny" in text and "psnr ↑" in text and "codebook_usage ↑" in text
    rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert {r["metric"] for r in rows} >= {"psnr", "ssim", "codebook_usage", "unique_ratio"}
    assert all(r["dataset"] == "procedural" and r["protocol"] for r in rows)
    by = lambda pred: [r for r in rows if pred(r)]                                   # noqa: E731
    probe = by(lambda r: r["metric"].startswith("probe_"))
    entropy = by(lambda r: r["metric"] == "cond_entropy_bits")   # per position, on the training split
    curve = by(lambda r: "k" in json.loads(r["extra"]) and r not in probe + entropy)
    gen = by(lambda r: r["kind"] == "generator")
    evaluation = [r for r in rows if r not in curve + probe + gen + entropy]
    assert sorted(json.loads(r["extra"])["k"] for r in entropy) == list(range(64))   # vq-tiny: 8x8 tokens
    assert all(r["split"] == "train" and r["n_images"] == 128 for r in entropy)
    assert all(r["n_images"] == 64 for r in evaluation + probe) and all(r["n_images"] == 32 for r in curve)
    assert sorted(json.loads(r["extra"])["k"] for r in curve) == [1, 2, 4, 8, 16, 32, 64]
    assert {r["metric"] for r in probe} >= {"probe_top1_k1", "probe_top1_all"}
    assert {r["metric"] for r in gen} == {"gfid", "gkid", "gkid_std", "gfid_nocfg", "gkid_nocfg", "gkid_std_nocfg"}
    assert "± " in text                                    # gKID with its spread
    assert all(r["n_images"] == 16 and r["feature_extractor"] and json.loads(r["extra"])["sampler"]["cfg_scale"]
               == 2.0 for r in gen)
    assert "## Generators" in text and "gfid [torch-fidelity] ↓" in text and "probe_top1_k1 ↑" in text
    assert (tmp_path / "samples" / "ar-tiny@vq-tiny.npz").exists()
    assert (tmp_path / "results_curves.csv").exists() and (tmp_path / "results_progressive.png").exists()
    assert (tmp_path / "results_entropy.png").exists()
    timings = (tmp_path / "timings.md").read_text()                # where the time went, and on what machine
    assert "| train tokenizers |" in timings and "torch 2." in timings and "CPU capability" in timings
    stamp = (tmp_path / "results.jsonl").stat().st_mtime_ns
    run_suite("tiny", tmp_path, progress=False)                    # finished: nothing is redone
    assert (tmp_path / "results.jsonl").stat().st_mtime_ns == stamp
    assert len(open(tmp_path / "results.jsonl").readlines()) == len(rows)

    # re-evaluating replaces only the evaluation's own rows: probes and curves of the run stay
    from harness.evaluation.record import evaluate_and_record
    from harness.core.results import ResultsStore
    evaluate_and_record(tmp_path / "runs" / "vq-tiny", ResultsStore(tmp_path / "results.jsonl"),
                        run_id="tiny/vq-tiny", dataset="procedural", split="test", n_eval=64,
                        metrics=("psnr",), batch_size=32, device="cpu")
    again = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert len(again) == len(rows) and {r["metric"] for r in again} == {r["metric"] for r in rows}

    assert main(["report", str(tmp_path / "results.jsonl"), "--out", str(tmp_path / "tables")]) == 0
    assert (tmp_path / "tables" / "results.tex").exists()
    assert main(["report", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_suite_over_seeds_trains_replicas_and_tables_mean_and_std(tmp_path):
    """--seeds 2: every run again with seed 1 (the generator on the tokenizer of seed 1, sampled with seed 1),
    and results_seeds.* with each value's mean and sample std over the two seeds."""
    import pandas as pd
    assert main(["run", "tiny", "--out", str(tmp_path), "--seeds", "2", "--quiet", "--device", "cpu"]) == 0
    rows = pd.read_json(tmp_path / "results.jsonl", lines=True)
    assert {"tiny/vq-tiny", "tiny/vq-tiny.seed1", "tiny/ar-tiny@vq-tiny", "tiny/ar-tiny@vq-tiny.seed1"} \
        == set(rows["run_id"])
    tok = rows[rows["run_id"].str.startswith("tiny/vq-tiny")]
    assert set(tok[tok["run_id"] == "tiny/vq-tiny.seed1"]["seed"]) == {1}          # tokenizer rows: training seed
    gen = rows[rows["run_id"] == "tiny/ar-tiny@vq-tiny.seed1"]
    assert set(gen["seed"]) == {1} and (tmp_path / "samples" / "ar-tiny@vq-tiny.seed1.npz").exists()
    from harness.core.checkpoint import latest, load_state
    trained_on = load_state(latest(tmp_path / "runs" / "ar-tiny@vq-tiny.seed1" / "checkpoints"))["data"]["tokenizer_from_run"]
    assert "vq-tiny.seed1" in trained_on
    psnr = tok[(tok["metric"] == "psnr")].drop_duplicates("run_id", keep="last")["value"]
    assert len(psnr) == 2 and psnr.iloc[0] != psnr.iloc[1]                        # another seed, another run
    wide = pd.read_csv(tmp_path / "results_seeds.csv")
    line = wide[wide["run_id"] == "tiny/vq-tiny"].iloc[0]
    assert line["seed"] == "0,1"
    assert line["psnr ↑"] == pytest.approx(psnr.mean(), rel=1e-9)
    assert line["psnr_seedstd ↓"] == pytest.approx(psnr.std(ddof=1), rel=1e-9)
    text = (tmp_path / "results_seeds.md").read_text()
    assert "± " in text and "standard deviation over the 2 training seeds" in text
    assert "tiny/vq-tiny.seed1" not in text and "tiny/vq-tiny.seed1" in (tmp_path / "results.md").read_text()
