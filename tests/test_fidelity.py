"""FID-family metrics and LPIPS as a metric: agreement with torch-fidelity given the same Inception weights,
analytic cases, one feature pass shared per batch, the split feature cache, DDP equality, missing weights.

Inception at 299 px runs at a few images per second on 2 CPU cores, so fast tests use a handful of real
images, synthetic features, or ``PixelFeaturesDouble`` (a named stand-in for the network where only the
bookkeeping around it is under test); the end-to-end and DDP runs on real images are marked slow.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO

from harness.evaluation import features as HF
from harness.core.contracts import EvalBatch
from harness.core.errors import MissingWeightsError, VQBenchError
from harness.evaluation.pipeline import build_metrics, metric_values
from harness.evaluation.features import (FIDInception, InceptionFeatures, graph_state_from_torch_fidelity,
                              tf1_bilinear_resize, torch_fidelity_state_dict)
from harness.evaluation.metrics import fidelity
from harness.evaluation.metrics.fidelity import (fid_from_features, generation_fidelity, inception_score,
                                      kid_from_features, precision_recall)

tf_fid = pytest.importorskip("torch_fidelity")


# ---------------------------------------------------------------- fixtures
def fmnist(n: int, skip: int = 0) -> torch.Tensor:
    from harness.data.datasets import open_dataset
    ds = open_dataset("fashion-mnist", "test", channels=3, n=n + skip)
    return ds.batch(torch.arange(skip, n + skip))[0]


@pytest.fixture(scope="session")
def packaged_graph_state():
    from harness.models.teachers import load_fid_inception
    return load_fid_inception().state_dict()


@pytest.fixture(scope="session")
def torch_fidelity_weights(tmp_path_factory, packaged_graph_state):
    """The packaged Inception in torch-fidelity's file format. Its classifier is a seeded random
    ClassifierDouble (the packaged graph has none): it exercises the logits path, nothing is scored with it."""
    g = torch.Generator().manual_seed(0)
    fc_w, fc_b = torch.randn(1008, 2048, generator=g) * 0.01, torch.randn(1008, generator=g) * 0.01
    path = tmp_path_factory.mktemp("tf-weights") / "inception-with-classifier-double.pth"
    torch.save(torch_fidelity_state_dict(packaged_graph_state, fc_w, fc_b), path)
    return path


class PixelFeaturesDouble:
    """Stands in for FIDInception where only the bookkeeping around it is tested: deterministic
    64-d features of the pixels (pooled 4x4, fixed random projection, ReLU); counts images seen."""
    has_classifier = False

    def __init__(self):
        self.images_seen = 0
        self.proj = torch.randn(48, 64, generator=torch.Generator().manual_seed(1))

    def features(self, images, how=HF.DEFAULT_INPUT):
        self.images_seen += len(images)
        x = images.float().expand(-1, 3, -1, -1)
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return InceptionFeatures(torch.relu(pooled @ self.proj).cpu())


@pytest.fixture
def pixel_double(monkeypatch, tmp_path):
    double = PixelFeaturesDouble()
    monkeypatch.setattr(HF, "shared_extractor", lambda device="cpu": double)
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(HF.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))       # no torch-fidelity file there
    return double


def synthetic(n, d=64, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g).abs() + shift).float()


# ---------------------------------------------------------------- the feature pass equals torch-fidelity's
def test_tf1_resize_matches_torch_fidelity():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    for shape in [(2, 3, 28, 28), (1, 3, 256, 300), (1, 3, 299, 299)]:
        x = torch.rand(*shape) * 255
        ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        torch.testing.assert_close(tf1_bilinear_resize(x), ref, atol=1e-4, rtol=0)


def test_weight_conversion_round_trips_and_torch_fidelity_loads_it(packaged_graph_state, torch_fidelity_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    sd = torch.load(torch_fidelity_weights, weights_only=True)
    FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                feature_extractor_weights_path=str(torch_fidelity_weights))   # strict load
    back = graph_state_from_torch_fidelity(sd, "test")
    assert set(back) - {"fc.weight", "fc.bias"} == set(packaged_graph_state)
    for k, v in packaged_graph_state.items():
        assert torch.equal(back[k], v), k
    sd["Mixed_6a.branch3x3.bn.weight"] = sd["Mixed_6a.branch3x3.bn.weight"] * 2
    with pytest.raises(VQBenchError, match="not all ones"):
        graph_state_from_torch_fidelity(sd, "test")


@pytest.mark.slow          # two Inception networks on 2 images: ~20 s on a busy 2-core CPU
def test_features_equal_torch_fidelity_network_on_real_images(torch_fidelity_weights, monkeypatch, tmp_path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))
    images = fmnist(2)
    ours = FIDInception(weights=torch_fidelity_weights, check_hash=False)
    assert ours.has_classifier and ours.weights_tag == "torch-fidelity"
    feats = ours.features(images)
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(torch_fidelity_weights))
    with torch.no_grad():
        pool3, logits = net(((images + 1) * 127.5).round().to(torch.uint8))
    torch.testing.assert_close(feats.pool3, pool3, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(feats.logits, logits, atol=1e-4, rtol=1e-4)
    # the teacher convention: pool3 as an N x 2048 x 1 x 1 map; grayscale input = its 3-channel copy
    torch.testing.assert_close(ours(images[:1, :1]).flatten(1), feats.pool3[:1], atol=1e-5, rtol=1e-5)


def test_folded_network_equals_the_torchscript_graph_within_1e_4():
    """The extractor runs FoldedInception (batch norm folded, channels-last); its pool3 features must stay
    within 1e-4 of the shipped graph's (relative to the largest feature), so FID values do not move."""
    from harness.evaluation.features import inception_input, load_fid_graph
    from harness.evaluation.inception_net import FoldedInception
    graph, _ = load_fid_graph()
    folded = FoldedInception(graph)
    colour = torch.rand(1, 3, 40, 52, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for images in (fmnist(3), colour):
        x = inception_input(images)
        with torch.no_grad():
            ref, ours = graph(x), folded(x.contiguous(memory_format=torch.channels_last))
        assert ref.shape == ours.shape == (len(images), 2048)
        assert ((ours - ref).abs().max() / ref.abs().max()).item() <= 1e-4
        assert ref.abs().max() > 0.1                      # real activations, not a degenerate input
    # the extractor's chunking does not change a feature
    extractor = FIDInception()
    whole = extractor.net(inception_input(fmnist(12)))
    torch.testing.assert_close(extractor.features(fmnist(12)).pool3, whole, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- metric math equals torch-fidelity's
def test_fid_kid_precision_recall_is_agree_with_torch_fidelity_functions(monkeypatch):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric
    a, b = synthetic(300, seed=0), synthetic(260, shift=0.2, seed=1)
    ref = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
    assert fid_from_features(a, b) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    wide_a, wide_b = synthetic(90, d=256, seed=8), synthetic(110, d=256, shift=0.05, seed=9)   # N < D
    ref_wide = fid_statistics_to_metric(fid_features_to_statistics(wide_a), fid_features_to_statistics(wide_b), False)
    assert fid_from_features(wide_a, wide_b) == pytest.approx(ref_wide["frechet_inception_distance"], rel=1e-6)
    ref = kid_features_to_metric(a.double(), b.double(), kid_subsets=20, kid_subset_size=100, verbose=False)
    mean, std = kid_from_features(a, b, subsets=20, subset_size=100)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9)
    monkeypatch.setattr(fidelity, "GRAM_BYTES", 0)                  # the kernels-per-subset path (large N)
    assert kid_from_features(a, b, subsets=20, subset_size=100) == (pytest.approx(mean, rel=1e-12),
                                                                    pytest.approx(std, rel=1e-9))
    # torch-fidelity's convention: features_1 generated, features_2 real
    ref = prc_features_to_metric(b.double(), a.double(), prc_neighborhood=3, prc_batch_size=10000,
                                 save_cpu_ram=False, verbose=False)
    # (torch-fidelity rounds its fractions to float32)
    assert precision_recall(a, b, k=3) == (pytest.approx(ref["precision"], abs=1e-7),
                                           pytest.approx(ref["recall"], abs=1e-7))
    logits = synthetic(200, d=1008, seed=2) * 3
    ref = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert inception_score(logits) == (pytest.approx(ref["inception_score_mean"], rel=1e-9),
                                       pytest.approx(ref["inception_score_std"], rel=1e-9))


def test_analytic_cases():
    a = synthetic(200, seed=3)
    sigma_trace = float(torch.cov(a.double().T).trace())
    assert abs(fid_from_features(a, a)) < 1e-8 * sigma_trace
    shift = torch.linspace(0, 1, a.shape[1])
    assert fid_from_features(a, a + shift) == pytest.approx(float(shift.double() @ shift.double()), rel=1e-6)
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, a + 1000.0) == (0.0, 0.0)             # disjoint manifolds
    assert precision_recall(a, a[:50])[0] == 1.0                     # a subset lies inside the real manifold
    # KID of two constant sets is exactly k(x,x) + k(y,y) - 2 k(x,y) for the cubic kernel (x.y / d + 1)^3
    x, y = torch.full((30, 8), 0.5), torch.full((40, 8), 1.5)
    k = lambda u, v: (float(u[0] @ v[0]) / 8 + 1) ** 3
    assert kid_from_features(x, y, subsets=5)[0] == pytest.approx(k(x, x) + k(y, y) - 2 * k(x, y), rel=1e-12)
    # KID between two halves of one sample is ~0 next to a shifted sample's
    b = synthetic(400, seed=4)
    assert abs(kid_from_features(b[:200], b[200:])[0]) < 0.05 * kid_from_features(b[:200], b[200:] + 0.3)[0]
    # IS: confident predictions spread evenly over C classes give C; uniform predictions give 1
    classes = 7
    onehot = torch.nn.functional.one_hot(torch.arange(700) % classes, 1008).double() * 1e4
    assert inception_score(onehot, splits=1)[0] == pytest.approx(classes, rel=1e-9)
    assert inception_score(torch.zeros(100, 1008)) == (pytest.approx(1.0), pytest.approx(0.0))


# ---------------------------------------------------------------- streaming metrics
def _batches(images, recon, size):
    return [EvalBatch(real=images[s:s + size], reconstruction=recon[s:s + size],
                      image_ids=torch.arange(s, min(s + size, len(images))))
            for s in range(0, len(images), size)]


def test_metrics_share_one_feature_pass_per_batch_and_equal_the_pure_functions(pixel_double):
    real = torch.rand(40, 1, 16, 16) * 2 - 1
    recon = (real + 0.3 * torch.rand_like(real)).clamp(-1, 1)
    metrics = build_metrics(["rfid", "precision-recall", "inception-score"])
    for batch in _batches(real, recon, 16):
        for m in metrics:
            m.update(batch)
    assert pixel_double.images_seen == 2 * 40                       # once per image and field, not per metric
    values = {v.name: v for v in metric_values(metrics)}
    fr, fx = PixelFeaturesDouble().features(real).pool3, PixelFeaturesDouble().features(recon).pool3
    assert values["rfid"].value == pytest.approx(fid_from_features(fr, fx), rel=1e-12)
    assert values["rkid"].value == pytest.approx(kid_from_features(fx, fr)[0], rel=1e-12)
    p, r = precision_recall(fr, fx)
    assert (values["precision"].value, values["recall"].value) == (p, r)
    assert all(v.feature_extractor == "inception-fid" for v in values.values())
    # no classifier: IS is NaN with the reason, never a number
    assert math.isnan(values["inception_score"].value)
    assert "torch-fidelity" in values["inception_score"].reason and HF.WEIGHTS_ENV in values["inception_score"].reason


def test_split_features_are_cached_and_used_only_for_the_same_images(pixel_double):
    describe = {"name": "procedural", "split": "test", "n": 24, "resolution": 16, "channels": 1}
    real = torch.rand(24, 1, 16, 16) * 2 - 1
    recon = real.flip(-1)

    def run(images):
        m = build_metrics(["rfid"])[0]
        for b in _batches(images, recon, 8):
            b.dataset = describe
            m.update(b)
        m.sync()
        return m.compute()["rfid"]

    first = run(real)
    assert pixel_double.images_seen == 48 and HF.cache_path(describe).exists()
    assert run(real) == first and pixel_double.images_seen == 48 + 24      # reals came from the cache
    other = real.clone()
    other[5] = -other[5]                                                   # same key, another image
    run(other)
    assert pixel_double.images_seen == 72 + 24 + 8                         # that image's batch recomputed


def test_generation_fidelity_values_and_missing_classifier():
    ref, samples = InceptionFeatures(synthetic(120, seed=5)), InceptionFeatures(synthetic(100, shift=0.1, seed=6))
    out = generation_fidelity(samples, ref)
    assert out["gfid"] == (pytest.approx(fid_from_features(ref.pool3, samples.pool3)), "")
    assert out["gkid"][0] == pytest.approx(kid_from_features(samples.pool3, ref.pool3)[0])
    assert math.isnan(out["inception_score"][0]) and HF.TORCH_FIDELITY_FILES[0] in out["inception_score"][1]
    with_logits = InceptionFeatures(samples.pool3, synthetic(100, d=1008, seed=7))
    value, reason = generation_fidelity(with_logits, ref, ("inception_score",))["inception_score"]
    assert value == pytest.approx(inception_score(with_logits.logits)[0]) and reason == ""
    with pytest.raises(VQBenchError, match="unknown generation metrics"):
        generation_fidelity(samples, ref, ("fid",))


def test_missing_weights_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setenv(HF.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match=HF.WEIGHTS_ENV):
        HF.find_classifier_weights()
    monkeypatch.delenv(HF.WEIGHTS_ENV)
    with pytest.raises(MissingWeightsError, match="not found"):
        FIDInception(weights=tmp_path / "nope.pth")
    bad = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": torch.zeros(2)}, bad)
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(VQBenchError, match="sha256"):
        FIDInception(weights=bad)


# ---------------------------------------------------------------- LPIPS as a metric
@pytest.mark.parametrize("name,net,value", [("lpips", "alex", "lpips"), ("lpips-vgg", "vgg", "lpips_vgg")])
def test_lpips_metric_is_the_mean_of_per_image_lpips(name, net, value):
    from harness.models.lpips import load_lpips
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 1, 28, 28, generator=g) * 2 - 1
    recon = (real + 0.2 * torch.randn(6, 1, 28, 28, generator=g)).clamp(-1, 1)
    m = build_metrics([name])[0]
    for s in range(0, 6, 4):
        m.update(EvalBatch(real=real[s:s + 4], reconstruction=recon[s:s + 4]))
    (v,) = metric_values([m])
    with torch.no_grad():
        expected = load_lpips(net)(real, recon).double().mean().item()
    assert v.name == value and v.value == pytest.approx(expected, rel=1e-6) and not v.higher_is_better
    assert v.feature_extractor == {"alex": "alexnet", "vgg": "vgg16"}[net]


# ---------------------------------------------------------------- result rows
def test_rows_record_feature_extractor_and_reason(pixel_double, tmp_path):
    from harness.evaluation.record import evaluate_and_record
    from harness.core.results import ResultsStore
    from harness.training.train_tokenizer import train_tokenizer
    ckpt = train_tokenizer("vq-tiny", tmp_path / "run", overrides=["steps=1", "batch_size=4", "perceptual_weight=0",
                                                                    "disc_start=10", "ckpt_every=1"],
                           dataset="procedural", device="cpu", progress=False)
    store = ResultsStore(tmp_path / "results.jsonl")
    evaluate_and_record(ckpt, store, run_id="r", dataset="procedural", split="test", n_eval=20,
                        metrics=("rfid", "inception-score", "lpips"), batch_size=8, device="cpu")
    rows = {r["metric"]: r for r in map(json.loads, open(tmp_path / "results.jsonl"))}
    assert rows["rfid"]["feature_extractor"] == rows["rkid"]["feature_extractor"] == "inception-fid"
    assert rows["lpips"]["feature_extractor"] == "alexnet"
    assert rows["inception_score"]["value"] is None
    assert "torch-fidelity" in json.loads(rows["inception_score"]["extra"])["reason"]


# ---------------------------------------------------------------- slow: real images end to end, DDP
@pytest.mark.slow
def test_rfid_rkid_agree_with_torch_fidelity_end_to_end(torch_fidelity_weights, monkeypatch, tmp_path):
    """200 real Fashion-MNIST test images and blurred copies (reconstruction-like) through torch-fidelity's
    own pipeline (its network from the same weights, its resize, its metrics) and vqbench's streaming metrics."""
    from torch_fidelity import calculate_metrics
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(HF, "shared_extractor",
                        lambda device="cpu": FIDInception(weights=torch_fidelity_weights, check_hash=False))
    n = 200
    a = fmnist(n)
    b = torch.nn.functional.avg_pool2d(a, 3, 1, 1, count_include_pad=False)     # blurred "reconstructions"

    class Uint8Set(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = ((x + 1) * 127.5).round().to(torch.uint8)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    ref = calculate_metrics(input1=Uint8Set(b), input2=Uint8Set(a), fid=True, kid=True, prc=True, cuda=False,
                            feature_extractor="inception-v3-compat", cache=False, verbose=False,
                            feature_extractor_weights_path=str(torch_fidelity_weights), kid_subset_size=100,
                            batch_size=50)
    metrics = build_metrics(["rfid", "precision-recall"])
    for batch in _batches(a, b, 50):
        for m in metrics:
            m.update(batch)
    values = {v.name: v.value for v in metric_values(metrics)}
    assert values["rfid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-3)
    real_f, recon_f = metrics[0].features("real").pool3, metrics[0].features("reconstruction").pool3
    # torch-fidelity with subsets of 100 (its draws: input1 = reconstructions first), the metric with min(1000, N)
    kid_100 = kid_from_features(recon_f, real_f, subset_size=100)[0]
    assert kid_100 == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-3)
    assert values["rkid"] == pytest.approx(kid_from_features(recon_f, real_f)[0], rel=1e-12)
    # a feature within float rounding of a ball's edge may flip one decision: at most one image in N
    assert values["precision"] == pytest.approx(ref["precision"], abs=1.01 / n)
    assert values["recall"] == pytest.approx(ref["recall"], abs=1.01 / n)


DDP_SCRIPT = r'''
import json, sys, torch
from harness.models.catalog import build_tokenizer, load_all
from harness.data.datasets import open_dataset
from harness.core.distributed import setup
from harness.evaluation.pipeline import build_metrics, evaluate_tokenizer
torch.set_num_threads(1)
load_all()
d = setup("cpu")
torch.manual_seed(0)
_, model = build_tokenizer("vq-tiny")
model.eval()
ds = open_dataset("fashion-mnist", "test", resolution=16, channels=1, n=14)
values = evaluate_tokenizer(model, ds, build_metrics(["rfid", "precision-recall"]), 4, d)
if d.is_main:
    json.dump({v.name: v.value for v in values}, open(sys.argv[1], "w"))
'''


@pytest.mark.slow
def test_ddp_rfid_equals_single_process(tmp_path, cli_env):
    script = tmp_path / "eval_fid.py"
    script.write_text(DDP_SCRIPT)
    results = {}
    for label, launcher in (("single", [sys.executable]),
                            ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node", "2"])):
        env = cli_env | {"OMP_NUM_THREADS": "1", "VQBENCH_CACHE": str(tmp_path / f"cache-{label}")}
        r = subprocess.run(launcher + [str(script), str(tmp_path / f"{label}.json")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        results[label] = json.loads((tmp_path / f"{label}.json").read_text())
    assert set(results["single"]) == {"rfid", "rkid", "rkid_std", "precision", "recall"}
    for k, v in results["single"].items():
        assert results["ddp"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
