"""Bootstrap uncertainty (issue #12 item 3): the standard error of a mean over images matches its analytic
value, FID's draws use an exact low-rank FID, per-image metrics and FIDs record stderr / ci95 / draws /
seed in their rows whatever the batching, and tables show ``value ± se`` with a footnote."""
import numpy as np
import pytest
import scipy.linalg
import torch

from harness.core.contracts import EvalBatch
from harness.evaluation import features as F
from harness.evaluation.metrics.bootstrap import bootstrap_mean, bootstrap_statistic
from harness.evaluation.metrics.fidelity import fid_from_features
from harness.evaluation.pipeline import build_metrics, metric_values


def test_bootstrap_stderr_of_a_mean_is_the_analytic_one():
    values = torch.from_numpy(np.random.default_rng(0).normal(3.0, 2.0, 400))
    record = bootstrap_mean(values)
    analytic = float(values.std() / len(values) ** 0.5)
    assert record["stderr"] == pytest.approx(analytic, rel=0.1)
    low, high = record["ci95"]
    assert low < float(values.mean()) < high and high - low == pytest.approx(2 * 1.96 * analytic, rel=0.15)
    assert record["bootstrap_resamples"] == 1000 and record == bootstrap_mean(values)     # seeded
    assert bootstrap_mean(values[:1]) == {}                                                # nothing to redraw


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root (the reference implementations' way)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n1,n2", [(30, 40), (40, 30), (100, 90), (30, 90)])   # <= D, > D, and one of each
def test_fid_of_few_images_is_exact(n1, n2):
    g = np.random.default_rng(1)
    a, b = np.abs(g.normal(0, 1, (n1, 64))), np.abs(g.normal(0.2, 1, (n2, 64)))
    assert fid_from_features(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-6)


def test_fid_bootstrap_draws_pairs_records_its_bias_and_is_seeded():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(60, 32, generator=g)
    recon = real + 0.3 * torch.randn(60, 32, generator=g)          # paired: each close to its own image
    value = fid_from_features(real, recon)
    paired = bootstrap_statistic(lambda i: fid_from_features(real[i], recon[i]), 60, value)
    assert paired == bootstrap_statistic(lambda i: fid_from_features(real[i], recon[i]), 60, value)
    assert paired["stderr"] > 0 and paired["bootstrap_resamples"] == 100 and "ci95" not in paired
    assert paired["bootstrap_bias"] > 0                   # repeated images raise a redrawn FID
    perm = torch.randperm(60, generator=g)                 # unpaired draws break the pairs: another spread
    unpaired = bootstrap_statistic(lambda i: fid_from_features(real[i], recon[perm[i]]), 60, value)
    assert unpaired["stderr"] != pytest.approx(paired["stderr"], rel=0.05)


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) * 2 - 1)


def _stream(names, splits, real, recon):
    metrics = build_metrics(names)
    for rows in splits:
        ids = torch.arange(len(real))[rows]
        for m in metrics:
            m.update(EvalBatch(real=real[rows], reconstruction=recon[rows], image_ids=ids))
    return {v.name: v for v in metric_values(metrics)}


def test_per_image_metrics_record_their_bootstrap_whatever_the_batching():
    real, recon = _images(24, 0), _images(24, 1) * 0.3 + _images(24, 0) * 0.7
    whole = _stream(["psnr", "ssim"], [slice(0, 24)], real, recon)
    batched = _stream(["psnr", "ssim"], [slice(5, 24), slice(0, 5)], real, recon)     # out of order: ids order them
    for name in ("psnr", "ssim"):
        extra = whole[name].extra
        assert set(extra) == {"stderr", "ci95", "bootstrap_resamples", "bootstrap_seed"} and extra["stderr"] > 0
        assert extra == batched[name].extra
        assert extra["ci95"][0] < whole[name].value < extra["ci95"][1]


def test_rfid_records_a_bootstrap_and_tables_show_plus_minus(monkeypatch, tmp_path):
    """rFID on stand-in features (a pixel double for the network: only the bookkeeping is under test)."""
    from test_fidelity import PixelFeaturesDouble
    from harness.core.results import make_rows
    from harness.reporting.tables import footnotes, to_markdown, wide_table
    monkeypatch.setattr(F, "shared_extractor", lambda device="cpu": PixelFeaturesDouble())
    real = _images(30, 3).expand(-1, 3, -1, -1)
    recon = (real + 0.2 * _images(30, 4)).clamp(-1, 1)
    values = _stream(["rfid", "psnr"], [slice(0, 30)], real, recon)
    assert values["rfid"].extra["stderr"] > 0 and values["rfid"].extra["bootstrap_resamples"] == 100
    run = {"run_id": "r", "kind": "tokenizer", "model": "vq", "preset": "vq-tiny", "config_hash": "h",
           "dataset": "d", "split": "test", "resolution": 8, "seed": 0, "started_at": "t"}
    rows = []
    for v in values.values():
        rows += make_rows(run, {v.name: v.value}, {v.name: v.higher_is_better}, v.protocol, n_images=30,
                          extra=v.extra)
    import pandas as pd
    df = pd.DataFrame(rows)
    line = next(line for line in to_markdown(df).splitlines() if "vq-tiny" in line)
    assert line.count("±") == 3                        # psnr ± se, rfid ± se, rkid ± std
    assert any(c.startswith("psnr_se") for c in wide_table(df).columns)          # the CSV keeps the column
    assert any("bootstrap standard error" in n for n in footnotes(df))
