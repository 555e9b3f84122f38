"""Linear probes on the first k tokens and progressive reconstruction (harness/probe.py, progressive.py)."""
import dataclasses
import json
import math

import pytest
import torch

from harness.cli import main
from harness.core.errors import VQBenchError
from harness.evaluation.probe import linear_probe, pooled_prefix_features, prefix_names, probe_and_record, topk_accuracy
from harness.evaluation.progressive import prefix_lengths, progressive_and_record
from harness.evaluation.record import evaluate_and_record
from harness.core.results import ResultsStore


# ---------------------------------------------------------------- the probe on known features
CENTERS = 4 * torch.randn(4, 6, generator=torch.Generator().manual_seed(7))   # one class vector per class


def _signal_at(position: int, n: int, seed: int, t: int = 12):
    """N x T x D embeddings: ``position`` holds the class vector, every other position noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % len(CENTERS)
    emb = 0.3 * torch.randn(n, t, CENTERS.shape[1], generator=g)
    emb[:, position] += CENTERS[y]
    return emb, y


def _probe(emb_train, y_train, emb_test, y_test, k, num_classes=4):
    tr = pooled_prefix_features(emb_train, [k])[k]
    te = pooled_prefix_features(emb_test, [k])[k]
    return linear_probe(tr, y_train, te, y_test, num_classes)


def test_probe_separates_linearly_separable_classes_from_the_right_prefix_only():
    # the class lives at position 5: any prefix containing it separates, the first 5 tokens cannot
    train, y_train = _signal_at(5, 400, seed=0)
    test, y_test = _signal_at(5, 400, seed=1)
    assert _probe(train, y_train, test, y_test, k=12)["top1"] >= 0.99
    assert _probe(train, y_train, test, y_test, k=6)["top1"] >= 0.99
    assert abs(_probe(train, y_train, test, y_test, k=5)["top1"] - 0.25) < 0.1     # chance: 4 classes
    assert abs(_probe(train, y_train, test, y_test, k=1)["top1"] - 0.25) < 0.1


def test_probe_on_random_labels_is_at_chance_and_top5_is_at_least_top1():
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(1000, 8, generator=g), torch.randn(2000, 8, generator=g)
    y_train, y_test = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    acc = linear_probe(x_train, y_train, x_test, y_test, 10)
    assert abs(acc["top1"] - 0.1) < 0.03 and abs(acc["top5"] - 0.5) < 0.05
    assert acc["top5"] >= acc["top1"]
    assert math.isnan(linear_probe(x_train, y_train % 4, x_test, y_test % 4, 4)["top5"])   # 1 by definition


def test_probe_fit_is_deterministic_and_standardization_removes_feature_scale():
    emb, y = _signal_at(0, 300, seed=3)
    x = pooled_prefix_features(emb, [1])[1]
    a = linear_probe(x, y, x, y, 4)
    assert a == linear_probe(x, y, x, y, 4)
    scaled = linear_probe(x * 1000 + 5, y, x * 1000 + 5, y, 4)
    assert scaled["top1"] == a["top1"]


def test_topk_accuracy_and_prefix_names():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]])
    assert topk_accuracy(logits, torch.tensor([1, 1]), 1) == 0.5
    assert topk_accuracy(logits, torch.tensor([1, 1]), 2) == 1.0
    assert prefix_names((1, 10, None), 49) == {"k1": 1, "k10": 10, "all": 49}
    assert prefix_names((1, 10, None), 8) == {"k1": 1, "all": 8}                 # 10 clips to T
    assert prefix_lengths(49) == [1, 2, 4, 8, 16, 32, 49]
    assert prefix_lengths(2) == [1, 2] and prefix_lengths(1) == [1]


# ---------------------------------------------------------------- on a trained checkpoint
@pytest.fixture(scope="module")
def vq_checkpoint(tmp_path_factory):
    from tokenizer_helpers import train_tiny_vq
    return train_tiny_vq(tmp_path_factory.mktemp("vq-tiny"))


def test_progressive_at_full_k_is_the_ordinary_reconstruction(vq_checkpoint, tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    ordinary = evaluate_and_record(vq_checkpoint, store, run_id="r", dataset=None, split="test", n_eval=48,
                                   metrics=("psnr", "ssim"), batch_size=16, device="cpu")
    rows = progressive_and_record(vq_checkpoint, store, run_id="r", dataset=None, split="test", n_eval=48,
                                  metrics=("psnr", "ssim"), ks=None, batch_size=16, device="cpu")
    extras = [json.loads(r["extra"]) for r in rows]
    assert sorted({e["k"] for e in extras}) == [1, 2, 4, 8, 16, 32, 64]          # vq-tiny: 8x8 tokens
    assert all(e["k_total"] == 64 and e["unit"] == "positions" for e in extras)
    assert {r["metric"] for r in rows} == {"progressive_psnr", "progressive_ssim"}
    assert all(r["n_images"] == 48 and r["protocol"] == "canonical" for r in rows)
    full = {r["metric"]: r["value"] for r, e in zip(rows, extras) if e["k"] == 64}
    for r in ordinary:
        assert full["progressive_" + r["metric"]] == pytest.approx(r["value"], rel=1e-9)
    one = {r["metric"]: r["value"] for r, e in zip(rows, extras) if e["k"] == 1}
    assert one["progressive_psnr"] != full["progressive_psnr"]

    # stored next to the evaluation's rows; a rerun recomputes nothing, extra ks add to the curve
    stored = store.records()
    assert len(stored) == len(ordinary) + len(rows)
    stamp = store.path.stat().st_mtime_ns
    again = progressive_and_record(vq_checkpoint, store, run_id="r", dataset=None, split="test", n_eval=48,
                                   metrics=("psnr",), ks=[1, 64], batch_size=16, device="cpu")
    assert store.path.stat().st_mtime_ns == stamp and len(again) == 2
    progressive_and_record(vq_checkpoint, store, run_id="r", dataset=None, split="test", n_eval=48,
                           metrics=("psnr",), ks=[3], batch_size=16, device="cpu")
    ks = sorted(json.loads(r["extra"])["k"] for r in store.records() if r["metric"] == "progressive_psnr")
    assert ks == [1, 2, 3, 4, 8, 16, 32, 64]
    with pytest.raises(VQBenchError, match="outside 1..64"):
        progressive_and_record(vq_checkpoint, store, run_id="r", dataset=None, n_eval=48, metrics=("psnr",),
                               ks=[65], batch_size=16, device="cpu")
    with pytest.raises(VQBenchError, match="images only"):
        progressive_and_record(vq_checkpoint, store, run_id="r", dataset=None, n_eval=48,
                               metrics=("codebook_usage",), ks=[1], batch_size=16, device="cpu")


def test_probe_and_record_on_a_checkpoint(vq_checkpoint, tmp_path, capsys):
    store = ResultsStore(tmp_path / "results.jsonl")
    rows = probe_and_record(vq_checkpoint, store, run_id="r", dataset=None, n_train=128, n_eval=64,
                            batch_size=32, device="cpu")
    assert [r["metric"] for r in rows] == ["probe_top1_k1", "probe_top5_k1", "probe_top1_k10",
                                           "probe_top5_k10", "probe_top1_all", "probe_top5_all"]
    by = {r["metric"]: r for r in rows}
    assert all(0 <= by[f"probe_top1_{s}"]["value"] <= 1 for s in ("k1", "k10", "all"))
    assert by["probe_top5_all"]["value"] is None or math.isnan(by["probe_top5_all"]["value"])  # 4 classes
    extra = json.loads(by["probe_top1_k10"]["extra"])
    assert extra["k"] == 10 and extra["n_train"] == 128 and extra["k_total"] == 64 and "L-BFGS" in extra["probe"]
    assert all(r["n_images"] == 64 and r["split"] == "test" for r in rows)
    stamp = store.path.stat().st_mtime_ns
    assert len(probe_and_record(vq_checkpoint, store, run_id="r", dataset=None, n_train=128, n_eval=64,
                                batch_size=32, device="cpu")) == 6
    assert store.path.stat().st_mtime_ns == stamp                  # recorded: nothing recomputed
    # the CLI front doors
    assert main(["probe", str(vq_checkpoint.parent.parent), "--results", str(tmp_path / "cli.jsonl"),
                 "--n-train", "64", "--n-eval", "32", "--ks", "all", "--device", "cpu"]) == 0
    assert "probe_top1_all" in capsys.readouterr().out
    assert main(["progressive", str(vq_checkpoint.parent.parent), "--results", str(tmp_path / "cli.jsonl"),
                 "--n-eval", "32", "--ks", "1,64", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "progressive_psnr" in out and "64/64 positions" in out


@pytest.mark.slow
def test_torchrun_gives_the_single_process_numbers(vq_checkpoint, tmp_path, cli_env):
    import subprocess
    import sys
    from conftest import REPO
    env = cli_env | {"OMP_NUM_THREADS": "1"}
    common = ["--n-eval", "48", "--batch-size", "16", "--device", "cpu", "--run-id", "r"]
    jobs = (["progressive", "--ks", "1,8,64", "--quiet"], ["probe", "--n-train", "96", "--ks", "1,all"])
    values = {}
    for launcher, store in ((["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], "ddp"),
                            ([], "single")):
        for job in jobs:
            cmd = [sys.executable, *launcher, "-m", "harness.cli", job[0], str(vq_checkpoint),
                   "--results", str(tmp_path / f"{store}.jsonl"), *common, *job[1:]]
            r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-3000:]
        rows = ResultsStore(tmp_path / f"{store}.jsonl").records()
        values[store] = {(r["metric"], json.loads(r["extra"])["k"]): r["value"] for r in rows}
        assert {json.loads(r["extra"])["world_size"] for r in rows} == {2 if store == "ddp" else 1}
    assert values["ddp"].keys() == values["single"].keys() and len(values["ddp"]) == 2 * 3 + 4
    for key, v in values["single"].items():
        if key[0].startswith("probe_"):
            assert values["ddp"][key] == v, key                 # same features, same deterministic fit
        else:
            assert values["ddp"][key] == pytest.approx(v, rel=1e-9), key


def test_a_probe_of_one_sub_codebook_reads_that_sub_codebook_alone(vq_checkpoint, tmp_path, capsys):
    """FQGAN Fig. 4 as a number: ``LinearProbes(factor=f)`` pools the codes of sub-codebook f only."""
    from tokenizer_helpers import TINY_VQ_SETTINGS
    from harness.core.distributed import setup
    from harness.evaluation.probe import LinearProbes
    from harness.evaluation.recording import load_run, record
    from harness.training.train_tokenizer import train_tokenizer
    checkpoint = train_tokenizer("fq-tiny", tmp_path / "fq", overrides=list(TINY_VQ_SETTINGS) + [
        "representation_weight=0", "teacher=none"], dataset="procedural", progress=False)
    d, store = setup("cpu"), ResultsStore(tmp_path / "results.jsonl")
    run = load_run(checkpoint, d.device, "fq")
    idx = run.model.encode(torch.rand(2, 1, 16, 16) * 2 - 1)
    both, dim = run.model.code_embeddings(idx), run.model.cfg.codebook_dim
    assert torch.equal(run.model.factor_code_embeddings(idx, 0), both[..., :dim])
    assert torch.equal(run.model.factor_code_embeddings(idx, 1), both[..., dim:])
    whole = LinearProbes(n_train=128, n=64, ks=(None,), batch_size=32)
    one = dataclasses.replace(whole, factor=1)
    rows = record(run, [whole, one], store, d)
    by = {r["metric"]: r for r in rows}
    assert set(by) == {"probe_top1_all", "probe_top5_all", "probe_top1_all_f1", "probe_top5_all_f1"}
    assert json.loads(by["probe_top1_all"]["extra"])["feature_dim"] == 2 * dim
    extra = json.loads(by["probe_top1_all_f1"]["extra"])
    assert extra["factor"] == 1 and extra["feature_dim"] == dim          # one sub-codebook's width, not both
    stamp = store.path.stat().st_mtime_ns          # both kinds share one store: asked again, nothing is redone
    again = record(run, [whole, one], store, d)
    assert store.path.stat().st_mtime_ns == stamp and {r["metric"] for r in again} == set(by)
    # a tokenizer with one code per position has no sub-codebook 1: one clear error
    with pytest.raises(VQBenchError, match="factor=1"):
        record(load_run(vq_checkpoint, d.device, "vq"), [LinearProbes(n_train=64, n=32, ks=(None,), factor=1)],
               store, d)
    # the ordinary probe's rows keep their settings, so folders written before the field stay current
    assert "factor" not in LinearProbes(n_train=64, n=32).settings(run)
    # the CLI front door: --factor F writes the same rows as LinearProbes(factor=F)
    cli_store = tmp_path / "cli.jsonl"
    assert main(["probe", str(checkpoint), "--results", str(cli_store), "--run-id", "fq", "--n-train", "128",
                 "--n-eval", "64", "--ks", "all", "--batch-size", "32", "--device", "cpu", "--factor", "1"]) == 0
    assert "probe_top1_all_f1" in capsys.readouterr().out
    cli_rows = {r["metric"]: r["value"] for r in ResultsStore(cli_store).records()}
    assert set(cli_rows) == {"probe_top1_all_f1", "probe_top5_all_f1"}
    assert cli_rows["probe_top1_all_f1"] == by["probe_top1_all_f1"]["value"]
    assert main(["probe", str(checkpoint), "--results", str(cli_store), "--n-train", "64", "--n-eval", "32",
                 "--device", "cpu", "--factor", "2"]) == 2            # no sub-codebook 2: an error, not a row
