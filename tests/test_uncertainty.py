"""Uncertainty on the Inception metrics (issue #12 item 3, first part).

Stated before running:
- rKID, gKID and IS come with their own spread rows (rkid_std, gkid_std, inception_score_std): the
  std over KID's subsets / IS's splits, equal to what kid_from_features / inception_score return;
- a KID row records the subset size it used, and says when N forced it below the protocol's 1000;
- tables show such a value as ``mean ± std`` and hide the std column; a shrunk KID gets a footnote.
"""
import pytest
import torch

from harness.core.contracts import EvalBatch
from harness.core.results import make_rows
from harness.evaluation import features as F
from harness.evaluation.metrics.fidelity import inception_score, kid_from_features
from harness.evaluation.pipeline import build_metrics, metric_values
from harness.reporting.tables import footnotes, to_markdown, wide_table


def _features(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return F.InceptionFeatures(torch.randn(n, 64, generator=g) + shift, torch.randn(n, 1008, generator=g))


def test_kid_and_is_report_their_spread_and_the_subset_size_they_used():
    samples, reference = _features(40, 0), _features(50, 1, 0.3)
    gkid, score = build_metrics(["gkid", "inception_score"])
    gkid.reference = reference
    memo = {(F.EXTRACTOR_NAME, F.DEFAULT_INPUT, "samples"): samples}
    for m in (gkid, score):
        m.update(EvalBatch(samples=torch.zeros(40, 1, 8, 8), image_ids=torch.arange(40), feature_memo=memo))
    values = {v.name: v for v in metric_values([gkid, score])}
    mean, std = kid_from_features(samples.pool3, reference.pool3)
    assert values["gkid"].value == pytest.approx(mean) and values["gkid_std"].value == pytest.approx(std) and std > 0
    assert values["gkid"].extra == {"kid_subset_size": 40, "kid_subset_shrunk": True} == values["gkid_std"].extra
    is_mean, is_std = inception_score(samples.logits)
    assert values["inception_score"].value == pytest.approx(is_mean)
    assert values["inception_score_std"].value == pytest.approx(is_std) and is_std > 0


def _generator_rows(run_id, gkid, gkid_std, n=150, shrunk=True):
    run = {"run_id": run_id, "kind": "generator", "model": "ar", "preset": "ar-fmnist", "config_hash": "h",
           "dataset": "fmnist", "split": "train", "resolution": 28, "seed": 0, "started_at": "t0"}
    extra = {"kid_subset_size": n, "kid_subset_shrunk": shrunk}
    return make_rows(run, {"gkid": gkid, "gkid_std": gkid_std, "gfid": 100.0},
                     {"gkid": False, "gkid_std": False, "gfid": False}, "adm", n_images=n, extra=extra)


def test_tables_show_mean_plus_minus_std_and_flag_a_shrunk_kid():
    import pandas as pd
    df = pd.DataFrame(_generator_rows("a", 0.1234, 0.0111) + _generator_rows("b", 0.2000, 0.0222))
    md = to_markdown(df)
    assert "**0.1234** ± 0.0111" in md and "| 0.2000 ± 0.0222 |" in md          # the best is bold, not its spread
    header = md.splitlines()[2]
    assert "gkid [adm]" in header and "gkid_std" not in header             # the spread is not its own column
    assert "gkid_std [adm] ↓" in wide_table(df).columns                     # the CSV keeps it
    notes = " ".join(footnotes(df))
    assert "± after KID or IS: the metric's own spread" in notes and "subsets of 150 images" in notes
    full = pd.DataFrame(_generator_rows("c", 0.1, 0.01, n=1000, shrunk=False))
    assert "understates" not in " ".join(footnotes(full))


def test_a_spread_pairs_with_its_value_whatever_their_directions():
    """IS is higher-is-better and its std is not: they still pair (the arrow is not part of the match)."""
    import pandas as pd
    run = {"run_id": "r", "kind": "generator", "model": "ar", "preset": "ar-fmnist", "config_hash": "h",
           "dataset": "fmnist", "split": "train", "resolution": 28, "seed": 0, "started_at": "t0"}
    rows = make_rows(run, {"inception_score": 3.25, "inception_score_std": 0.5},
                     {"inception_score": True, "inception_score_std": False}, "adm", n_images=150)
    md = to_markdown(pd.DataFrame(rows))
    assert "3.250 ± 0.500" in md and "inception_score_std" not in md.splitlines()[2]


# ---------------------------------------------------------------- token statistics and probes (item 3, second part)
# Stated before running: unique_ratio records the bootstrap of its per-image ratios (as PSNR does); codebook
# usage, entropy and perplexity record a seeded bootstrap whose usage draws sit below the value (a redrawn
# set holds fewer distinct images); probe accuracies record sqrt(p (1 - p) / n).
def _token_batches(n=64, t=16, k=1024, seed=0):
    from harness.core.contracts import TokenLayout
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(k, (n, t), generator=g)
    layout = TokenLayout.constant(t, k)
    return [EvalBatch(indices=idx[s], layout=layout, image_ids=torch.arange(n)[s])
            for s in (slice(0, 20), slice(20, n))], idx


def test_unique_ratio_and_codebook_usage_record_a_bootstrap():
    from harness.evaluation.metrics.bootstrap import bootstrap_mean
    batches, idx = _token_batches()
    usage, unique = build_metrics(["codebook_usage", "unique_ratio"])
    for b in batches:
        usage.update(b)
        unique.update(b)
    values = {v.name: v for v in metric_values([usage, unique])}
    per_image = torch.tensor([len(set(row.tolist())) / idx.shape[1] for row in idx], dtype=torch.float64)
    assert values["unique_ratio"].extra["stderr"] == pytest.approx(bootstrap_mean(per_image)["stderr"])
    for name in ("codebook_usage", "code_entropy_bits", "code_perplexity"):
        extra = values[name].extra
        assert extra["stderr"] > 0 and extra["bootstrap_resamples"] == 200
    assert values["codebook_usage"].extra["bootstrap_bias"] < 0
    again = build_metrics(["codebook_usage"])[0]
    for b in _token_batches()[0]:
        again.update(b)
    assert {v.name: v for v in metric_values([again])}["codebook_usage"].extra == values["codebook_usage"].extra


def test_probe_accuracy_records_its_binomial_error():
    from harness.evaluation.probe import binomial_stderr
    assert binomial_stderr(0.9, 100) == {"stderr": pytest.approx(0.03), "stderr_kind": "binomial"}
    assert binomial_stderr(float("nan"), 100) == {}


def test_a_spread_at_rounding_level_shows_as_zero():
    rows = make_rows({"run_id": "r", "kind": "tokenizer", "model": "m", "preset": "p", "config_hash": "h",
                      "dataset": "d", "split": "test", "resolution": 28, "seed": 0, "started_at": "t"},
                     {"rkid": 0.0935, "rkid_std": 1.4e-17}, {"rkid": False, "rkid_std": False}, "torch-fidelity",
                     n_images=150)
    import pandas as pd
    text = to_markdown(pd.DataFrame(rows))
    assert "0.09350 ± 0.00000 " in text or "0.0935 ± 0.0000 " in text
    assert "e-17" not in text and "000000000000" not in text
