"""The leaderboard's fixed-budget AR probe (issue #14 item 5): factorized tokens read as positions, held-out
likelihood in bits, Spearman correlations with bootstrap intervals, and `vqbench ar-probe` end to end on a
track over tiny presets (the real track, fmnist-49tok, takes about half an hour: README)."""
import json
import math

import numpy as np
import pytest
import torch

from harness.core.contracts import Conditioning
from harness.core.errors import VQBenchError
from harness.core.registry import SUITES, TRACKS
from harness.leaderboard.correlation import bootstrap_interval, rank_correlations, spearman
from harness.models.catalog import build_generator, build_tokenizer
from harness.models.factor_positions import FactorsAsPositions, generator_view


def images(n=4, seed=0):
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------ the view
@pytest.mark.parametrize("preset", ["rvq-tiny", "fq-tiny"])
def test_factors_as_positions_flattens_position_major_and_decodes_as_the_tokenizer(preset):
    torch.manual_seed(0)
    _, tok = build_tokenizer(preset)
    tok.eval()
    view = generator_view(tok, "as-positions")
    inner = tok.layout
    assert view.layout.num_factors == 1 and view.layout.position_kind == "latent"
    assert view.layout.num_positions == inner.num_positions * inner.num_factors
    assert view.layout.bits_per_image == pytest.approx(inner.bits_per_image)
    assert view.layout.codebook_sizes == tuple(k for k in inner.codebook_sizes for _ in range(inner.num_factors))
    x = images()
    native = tok.encode(x)
    flat = view.encode(x)
    assert flat.shape == (4, inner.num_positions * inner.num_factors)
    assert torch.equal(flat[:, :inner.num_factors], native[:, 0])       # t0's factors come first
    assert torch.equal(view.decode(flat), tok.decode(native))


def test_factors_as_positions_refuses_a_one_factor_tokenizer_and_an_unknown_mode():
    _, tok = build_tokenizer("vq-tiny")
    with pytest.raises(VQBenchError, match="one code per position"):
        FactorsAsPositions(tok)
    with pytest.raises(VQBenchError, match="native, as-positions"):
        generator_view(tok, "interleaved")
    assert generator_view(tok, "native") is tok


# ------------------------------------------------------------------------------------------------ likelihood
def test_token_nll_is_the_training_loss_per_token_in_eval_mode():
    torch.manual_seed(0)
    _, tok = build_tokenizer("vq-tiny")
    _, ar = build_generator("ar-tiny", {}, tok, Conditioning("class", 10))
    torch.nn.init.normal_(ar.head.weight, std=0.5)        # away from the zero-initialised head's uniform output
    ar.eval()
    idx = torch.randint(0, 64, (5, 64))
    y = torch.arange(5)
    nll = ar.token_nll(idx, y)
    assert nll.shape == (5, 64)
    with torch.no_grad():
        assert float(nll.mean()) == pytest.approx(float(ar.loss(idx, y)), rel=1e-5)


@pytest.mark.parametrize("preset,factors", [("vq-tiny", "native"), ("vcq-tiny", "native"), ("rvq-tiny", "as-positions")])
def test_an_untrained_ar_scores_log2_k_per_position(preset, factors):
    """LlamaGen's head starts at zero: every valid code is equally likely, so an image costs sum_t log2 K_t bits
    (the layout's bits per image, VCQ's growing K_t included)."""
    from harness.data.datasets import open_dataset
    from harness.evaluation.likelihood import per_image_bits
    torch.manual_seed(0)
    _, tok = build_tokenizer(preset)
    view = generator_view(tok.eval(), factors)
    _, ar = build_generator("ar-tiny", {}, view, Conditioning("class", 10))
    ds = open_dataset("procedural", "test", resolution=16, channels=1, n=6)
    bits = per_image_bits(ar.eval(), view, ds, batch_size=4, device="cpu")
    assert bits.shape == (6,)
    assert torch.allclose(bits, torch.full((6,), tok.layout.bits_per_image, dtype=torch.float64), rtol=1e-5)


def test_likelihood_refuses_a_generator_without_exact_likelihoods():
    from types import SimpleNamespace
    from harness.evaluation.likelihood import TokenLikelihood
    from harness.evaluation.recording import LoadedRun
    _, tok = build_tokenizer("vq-tiny")
    _, masked = build_generator("masked-tiny", {}, tok, Conditioning("class", 10))
    run = LoadedRun("x/masked", None, {"data": {"dataset": "procedural"}}, masked, tok, {}, None)
    with pytest.raises(VQBenchError, match="exact token likelihoods"):
        TokenLikelihood(n=4).measure(run, SimpleNamespace(device="cpu", is_main=True), set())


# ------------------------------------------------------------------------------------------------ correlation
def test_spearman_equals_scipy_with_ties_and_is_nan_when_constant():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, size=9).astype(float)          # ties
        y = x * 0.5 + rng.normal(size=9)
        if np.ptp(x) == 0:
            continue
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))
    assert math.isnan(spearman([1, 2], [2, 1]))


def test_bootstrap_interval_brackets_rho_and_narrows_with_more_entries():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    low, high, used = bootstrap_interval(x, y, draws=400)
    rho = spearman(x, y)
    assert low < rho < high and used == 400
    low10, high10, _ = bootstrap_interval(x[:10], y[:10], draws=400)
    assert high10 - low10 > 2 * (high - low)


def test_rank_correlations_orient_so_that_plus_means_better_predicts_better():
    # PSNR up, NLL down: a higher PSNR going with a lower NLL is a perfect predictor
    values = {f"e{i}": {"psnr": float(i), "nll_bits_per_image": 100.0 - i, "rfid": 50.0 - i} for i in range(6)}
    values["e6"] = {"psnr": 7.0}                                 # no probe result: not counted
    out = {c.predictor: c for c in rank_correlations(values, ("psnr", "rfid"), ("nll_bits_per_image",),
                                                     {"psnr": True, "rfid": False, "nll_bits_per_image": False},
                                                     draws=200)}
    assert out["psnr"].rho == pytest.approx(-1.0) and out["psnr"].oriented[0] == pytest.approx(1.0)
    assert out["rfid"].rho == pytest.approx(1.0) and out["rfid"].oriented[0] == pytest.approx(1.0)
    assert out["psnr"].n == 6


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture
def probe_track():
    from harness.evaluation.record import ReconstructionMetrics
    from harness.leaderboard.ar_probe import ARProbe
    from harness.leaderboard.tracks import Track
    from harness.suites import TINY_TOKENIZER, GeneratorRun, Suite, TokenizerRun
    from harness.evaluation.record_generation import GenerationMetrics
    from harness.core.contracts import SamplerConfig
    metrics = (ReconstructionMetrics(("psnr", "ssim", "codebook_usage", "unique_ratio"), n=32, batch_size=32),)
    suite = Suite("tiny-probe", "three tiny tokenizers and ar-tiny on vq-tiny (tests of the AR probe)",
                  tuple(TokenizerRun(p, p, TINY_TOKENIZER, dataset="procedural", evaluations=metrics)
                        for p in ("vq-tiny", "simvq-tiny", "rvq-tiny")),
                  (GeneratorRun("ar-tiny@vq-tiny", "ar-tiny", "vq-tiny", ("steps=6", "batch_size=16", "ckpt_every=3"),
                                evaluations=(GenerationMetrics(SamplerConfig(cfg_scale=2.0), n_samples=16,
                                                               metrics=("gfid", "gkid"), batch_size=8),)),))
    SUITES.add(suite.name, suite, description="test")
    TRACKS.add("test-probe", Track(name="test-probe", description="tiny tokenizers with an AR probe",
                                   dataset="procedural", resolution=16, tokens=64, training="6 steps",
                                   protocol="torch-fidelity", suite="tiny-probe", tokenizer_template="vq-tiny",
                                   generator_template="ar-tiny@vq-tiny",
                                   ar_probe=ARProbe(template="ar-tiny@vq-tiny", suite="test-ar-probe",
                                                    likelihood_n=24)),
               description="test")
    yield "test-probe"
    TRACKS._entries.pop("test-probe", None)
    SUITES._entries.pop("tiny-probe", None)


def test_ar_probe_trains_scores_and_correlates_every_tokenizer_entry(probe_track, tmp_path, monkeypatch):
    from harness.cli import main
    from harness.core.results import row_extra
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny-probe"
    assert main(["ar-probe", probe_track, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    for r in rows:
        r["extra"] = row_extra(r)
    probe = {r["run_id"]: r for r in rows if r["run_id"].startswith("test-ar-probe/") and r["metric"] == "nll_bits_per_image"}
    assert set(probe) == {f"test-ar-probe/ar-probe@{t}" for t in ("vq-tiny", "simvq-tiny", "rvq-tiny")}
    for r in probe.values():
        assert 0 < r["value"] < r["extra"]["run_info"]["bits_per_image"] * 1.5 and r["extra"]["stderr"] > 0
    # vq-tiny's probe is the suite's own ar-tiny@vq-tiny (same training): reused, not retrained
    assert not (out / "runs" / "ar-probe@vq-tiny").exists()
    assert probe["test-ar-probe/ar-probe@vq-tiny"]["config_hash"] == next(
        r["config_hash"] for r in rows if r["run_id"] == "tiny-probe/ar-tiny@vq-tiny")
    # the factorized RVQ was read as 128 positions; its rows describe the tokenizer as it is, flagged
    rvq = json.loads(next((out / "runs" / "ar-probe@rvq-tiny" / "checkpoints").glob("step_*/state.json")).read_text())
    assert rvq["train_config"]["factors"] == "as-positions"
    info = probe["test-ar-probe/ar-probe@rvq-tiny"]["extra"]["run_info"]
    assert (info["tokens"], info["factors"], info.get("factors_as_positions")) == (64, 2, True)
    gfid = {r["run_id"] for r in rows if r["run_id"].startswith("test-ar-probe/") and r["metric"] == "gfid"}
    assert len(gfid) == 3
    page = (out / "site" / "track-test-probe.html").read_text()
    assert 'id="ar-probe-correlations"' in page and "AR probe nll_bits_per_image" in page
    table = page[page.index('id="ar-probe-correlations"'):]
    table = table[:table.index("</table>")]
    for predictor in ("psnr ↑", "ssim ↑", "codebook_usage ↑", "unique_ratio ↑"):   # what the tiny suite measures
        assert f'<td class="text">{predictor}</td>' in table
    assert table.count("<tr>") == 5 and "ρ with nll_bits_per_image" in table and "ρ with gfid" in table
    assert "figures/test-probe-ar-probe-correlations.png" in page
    assert (out / "site" / "figures" / "test-probe-ar-probe-correlations.pdf").is_file()
    # each probe value links to the probe run's page, which finds the reused generator's checkpoint
    from harness.leaderboard.site import entry_id
    entry = out / "site" / f"entry-{entry_id('test-ar-probe/ar-probe@vq-tiny')}.html"
    assert entry.name in page and "checkpoint sha256" in entry.read_text()
    index = (out / "site" / "index.html").read_text()
    assert "belong to no track" not in index
    # a second call finds everything done: no row is measured again, nothing retrained
    before = (out / "results.jsonl").read_text()
    assert main(["ar-probe", probe_track, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert (out / "results.jsonl").read_text() == before
