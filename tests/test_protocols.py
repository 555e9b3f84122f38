"""Evaluation protocols (issue #12): the registry, the ADM evaluator's definitions against an independent
implementation written here from its documented behaviour, sFID's spatial features against torch-fidelity's
network, ADM reference batches (build, read, round trip), clean-fid's modes against the clean-fid package's
own functions, and the `--protocol` plumbing of eval and suites.

Inception at 299 px runs at about 10 images/s on 2 CPU cores: the real-network tests use 6-16 images; the
full clean-fid FID (scipy's sqrtm on 2048 x 2048, about 30 s per call here) is marked slow.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from test_fidelity import fmnist, packaged_graph_state, torch_fidelity_weights  # noqa: F401 (fixtures)

from harness.core.errors import VQBenchError
from harness.core.registry import PROTOCOLS
from harness.evaluation import features as HF
from harness.evaluation.features import FeatureInput, InceptionFeatures
from harness.evaluation.metrics.fidelity import (ReferenceSet, adm_inception_score, adm_precision_recall,
                                                 fid_against_stats, fid_from_features, feature_stats,
                                                 generation_fidelity, kid_from_features)
from harness.evaluation.protocols import DEFAULT_PROTOCOL, get_protocol


def synthetic(n, d=64, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, d, generator=g) + shift)


# ---------------------------------------------------------------- the registry
def test_every_protocol_is_listed_with_one_line_and_names_what_it_reproduces():
    names = [e.name for e in PROTOCOLS.entries()]
    assert names[0] == DEFAULT_PROTOCOL and {"adm", "clean-fid", "clean-fid-legacy-pytorch",
                                             "clean-fid-legacy-tensorflow"} <= set(names)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "list", "protocols"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for e in PROTOCOLS.entries():
        assert e.obj.name == e.name and e.meta.reproduces and "\n" not in e.meta.description
        assert sum(line.split()[0] == e.name for line in out.splitlines()[1:]) == 1


def test_protocols_define_what_their_evaluators_compute():
    adm, clean = get_protocol("adm"), get_protocol("clean-fid")
    assert adm.defines("sfid") and not adm.defines("gkid") and not adm.defines("rkid_std")
    assert clean.defines("gkid") and not clean.defines("precision") and not clean.defines("sfid")
    assert get_protocol("torch-fidelity").defines("recall") and get_protocol("torch-fidelity").defines("psnr")
    with pytest.raises(VQBenchError, match="unknown protocol 'adm2'; did you mean adm"):
        get_protocol("adm2")
    with pytest.raises(VQBenchError, match="does not define gkid"):
        generation_fidelity(InceptionFeatures(synthetic(10)), InceptionFeatures(synthetic(10, seed=1)),
                            ("gkid",), adm)


# ---------------------------------------------------------------- ADM, from its documented behaviour
def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def reference_adm_is(logits: np.ndarray, split_size: int = 5000) -> float:
    """evaluator.py's compute_inception_score: consecutive splits in order, exp(mean sum p (log p - log p_mean))."""
    preds = _softmax(logits.astype(np.float64))
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_adm_inception_score_splits_in_order_of_5000():
    logits = np.random.default_rng(0).normal(0, 3, (11000, 30))
    logits[:5000] *= 0.2                            # the first split differs: order matters
    mean, std = adm_inception_score(torch.from_numpy(logits))
    assert mean == pytest.approx(reference_adm_is(logits), rel=1e-9)
    assert mean != pytest.approx(reference_adm_is(np.random.default_rng(1).permutation(logits)), rel=1e-3)
    assert std > 0
    one_split = adm_inception_score(torch.from_numpy(logits[:3000]))
    assert one_split[0] == pytest.approx(reference_adm_is(logits[:3000]), rel=1e-9) and math.isnan(one_split[1])


def reference_adm_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """DistanceBlock: cast to float16, |u|^2 - 2 u.v + |v|^2 with each step in float16, max with 0; float32
    when any entry of the block is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):             # overflow is what the fallback is for
        u16, v16 = u.astype(np.float16), v.astype(np.float16)
        nu = np.square(u16).astype(np.float32).sum(1).astype(np.float16)
        nv = np.square(v16).astype(np.float32).sum(1).astype(np.float16)
        dots = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
        d = np.maximum(nu[:, None] - np.float16(2) * dots + nv[None], np.float16(0))
    if np.isfinite(d).all():
        return d.astype(np.float32)
    u, v = u.astype(np.float32), v.astype(np.float32)
    return np.maximum((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None], 0)


def reference_adm_pr(ref: np.ndarray, sample: np.ndarray, k: int = 3) -> tuple[float, float]:
    """ManifoldEstimator: radius = entry k of np.partition(distances, [0..k]) (the point itself is entry 0);
    a point is in a ball when distance <= radius; precision = samples in some reference ball."""
    r_ref = np.partition(reference_adm_distances(ref, ref), list(range(k + 1)), axis=1)[:, k]
    r_sample = np.partition(reference_adm_distances(sample, sample), list(range(k + 1)), axis=1)[:, k]
    d = reference_adm_distances(ref, sample)
    precision = (d <= r_ref[:, None]).any(0).mean()
    recall = (d <= r_sample[None, :]).any(1).mean()
    return float(precision), float(recall)


@pytest.mark.parametrize("scale", [1.0, 300.0])      # 300: |u|^2 overflows float16, the float32 fallback
def test_adm_precision_recall_is_its_manifold_estimator(scale):
    ref = synthetic(300, d=64, seed=2).numpy() * scale
    sample = synthetic(200, d=64, shift=0.3, seed=3).numpy() * scale
    ours = adm_precision_recall(torch.from_numpy(ref), torch.from_numpy(sample))
    assert ours == pytest.approx(reference_adm_pr(ref, sample), abs=1e-12)
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1
    # and the protocol routes to it
    out = generation_fidelity(InceptionFeatures(torch.from_numpy(sample)), InceptionFeatures(torch.from_numpy(ref)),
                              ("precision", "recall"), get_protocol("adm"))
    assert (out["precision"][0], out["recall"][0]) == ours


def test_adm_distances_are_float16_step_by_step():
    """Where float16 rounding changes the squared distances, ours equal the evaluator's float16 steps
    exactly (and not the float32 distances)."""
    from harness.evaluation.metrics.fidelity import _adm_sq_dists
    u, v = synthetic(40, d=64, seed=6).numpy() * 3, synthetic(30, d=64, shift=0.1, seed=7).numpy() * 3
    ours = _adm_sq_dists(torch.from_numpy(u), torch.from_numpy(v)).numpy()
    exact = ((u[:, None] - v[None]) ** 2).sum(-1)
    assert np.array_equal(ours, reference_adm_distances(u, v))
    assert np.abs(ours - exact).max() > 1e-4 * exact.max()          # float16 really is coarser


def test_fid_against_stats_equals_fid_from_the_features():
    a, b = synthetic(150, seed=4), synthetic(120, shift=0.2, seed=5)
    assert fid_against_stats(b, *feature_stats(a)) == pytest.approx(fid_from_features(a, b), rel=1e-9)
    assert fid_against_stats(b[:20], *feature_stats(a)) == pytest.approx(fid_from_features(a, b[:20]), rel=1e-9)
    ref = ReferenceSet(InceptionFeatures(a[:10]), stats=feature_stats(a))   # the statistics win over the images
    assert generation_fidelity(InceptionFeatures(b), ref, ("gfid",))["gfid"][0] == pytest.approx(
        fid_from_features(a, b), rel=1e-9)


def test_spatial_features_are_mixed_6d_branch1x1_first_7_channels_nhwc(torch_fidelity_weights, monkeypatch, tmp_path):
    """The independent reference: torch-fidelity's network (the same weights) with a hook on Mixed_6d.branch1x1
    (conv, batch norm, ReLU: the graph's mixed_6/conv:0), first 7 channels, flattened height, width, channel."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))
    images = fmnist(3)
    ours = HF.FIDInception(weights=torch_fidelity_weights, check_hash=False).features(images, FeatureInput(spatial=True))
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                      feature_extractor_weights_path=str(torch_fidelity_weights))
    seen = {}
    net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        (pool3,) = net(((images + 1) * 127.5).round().to(torch.uint8))
    expected = seen["out"][:, :7].permute(0, 2, 3, 1).reshape(len(images), -1)
    assert ours.spatial.shape == (3, 2023)
    torch.testing.assert_close(ours.spatial, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.pool3, pool3, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- ADM reference batches
def test_reference_build_then_reference_gives_the_fid_of_the_images_themselves(tmp_path, monkeypatch):
    from harness.evaluation.reference import build_reference, evaluate_npz, read_images, read_stats
    from harness.evaluation.generate import save_adm_npz, to_uint8_hwc
    from harness.data.datasets import open_dataset
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    ref = tmp_path / "ref.npz"
    assert build_reference("procedural", "train", ref, n_images=8, n_stats=8) == (8, 8)
    images, stats = read_images(ref), read_stats(ref)
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert stats["mu"].shape == (2048,) and stats["sigma_s"].shape == (2023, 2023)
    samples = tmp_path / "samples.npz"
    test_images, labels = open_dataset("procedural", "test", n=8).batch(torch.arange(8))
    save_adm_npz(samples, to_uint8_hwc(test_images), labels.numpy())
    via_file = evaluate_npz(samples, protocol="adm", reference=ref)
    direct = evaluate_npz(samples, protocol="adm", dataset="procedural", split="train", n_reference=8)
    assert set(via_file) == {"gfid", "sfid", "precision", "recall", "inception_score", "inception_score_std"}
    for name in ("gfid", "sfid", "precision", "recall"):
        assert via_file[name][0] == pytest.approx(direct[name][0], rel=1e-6), name
    assert via_file["gfid"][0] > 1


# ---------------------------------------------------------------- clean-fid, through the package itself
cleanfid = pytest.importorskip("cleanfid")
MODES = {"clean-fid": "clean", "clean-fid-legacy-pytorch": "legacy_pytorch",
         "clean-fid-legacy-tensorflow": "legacy_tensorflow"}


def clean_fid_torchscript_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """The resize inside the TorchScript Inception clean-fid's legacy_tensorflow mode runs (StyleGAN2-ADA's
    inception-2015-12-05.pt, ``resize_inside=True``), as that graph defines it: an identity affine grid of
    size x size, shifted by (1/W - 1/size, 1/H - 1/size), sampled bilinearly with border padding and
    align_corners=False. Written here from that definition, independently of vqbench's TF1 resize."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = 1 / w - 1 / size, 1 / h - 1 / size
    grid = torch.nn.functional.affine_grid(theta, [n, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize("shape", [(28, 28), (32, 32), (64, 48)])
def test_tf1_resize_is_clean_fid_legacy_tensorflow_resize(shape):
    """clean-fid's legacy_tensorflow resizes inside its TorchScript file (not on this machine); its grid
    resize and vqbench's TF1 bilinear resize agree to float32 rounding on 0..255 values, and differ from a
    plain align_corners=False bilinear resize (so the check can fail)."""
    x = torch.randint(0, 256, (2, 3, *shape), generator=torch.Generator().manual_seed(0)).float()
    theirs = clean_fid_torchscript_resize(x)
    assert (HF.tf1_bilinear_resize(x) - theirs).abs().max() < 5e-3
    plain = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (plain - theirs).abs().max() > 1.0


class VqbenchNetworkForCleanFid(torch.nn.Module):
    """vqbench's Inception (the same TF weights clean-fid's files hold) behind clean-fid's custom_feat_extractor
    interface: float images in [0, 255], already resized by clean-fid's resizer of the mode (for
    legacy_tensorflow at their own size: clean-fid's TorchScript resizes inside, emulated by
    ``clean_fid_torchscript_resize``)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode, self.net = mode, HF.shared_extractor("cpu").net

    def forward(self, x):
        if self.mode == "legacy_tensorflow":
            x = clean_fid_torchscript_resize(x)
        x = x / 255 * 2 - 1 if self.mode == "legacy_pytorch" else (x - 128) / 128
        return self.net(x.contiguous(memory_format=torch.channels_last))


def _png_folder(folder, images_hwc):
    from PIL import Image
    folder.mkdir()
    for i, im in enumerate(images_hwc):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return sorted(str(p) for p in folder.glob("*.png"))


@pytest.fixture(scope="module")
def clean_fid_features(tmp_path_factory):
    """For each mode: (clean-fid's features of PNG files through its own loading and resizing, vqbench's
    protocol features of the same images)."""
    from cleanfid.fid import get_files_features
    from harness.evaluation.generate import to_uint8_hwc
    images = fmnist(6)
    files = _png_folder(tmp_path_factory.mktemp("clean-fid") / "images", to_uint8_hwc(images))
    out = {}
    for protocol, mode in MODES.items():
        theirs = get_files_features(files, model=VqbenchNetworkForCleanFid(mode), num_workers=0, batch_size=3,
                                    device=torch.device("cpu"), mode=mode, verbose=False)
        ours = HF.shared_extractor("cpu").features(images, get_protocol(protocol).feature_input).pool3
        out[protocol] = (theirs, ours.numpy())
    return out


@pytest.mark.parametrize("protocol", list(MODES))
def test_clean_fid_modes_give_clean_fids_features(clean_fid_features, protocol):
    """clean-fid's own loading (PNG files), batching and resizer of the mode against vqbench's input of the
    protocol. For legacy_tensorflow clean-fid resizes inside its TorchScript, which is not on this machine:
    the stand-in resizes as that graph does (``clean_fid_torchscript_resize``)."""
    theirs, ours = clean_fid_features[protocol]
    assert np.abs(theirs - ours).max() <= 1e-3 * np.abs(theirs).max()


def _clean_fid_kid(reference: np.ndarray, generated: np.ndarray, subset: int) -> float:
    from cleanfid.fid import kernel_distance
    state = np.random.get_state()
    try:
        np.random.seed(2020)
        return kernel_distance(reference, generated, num_subsets=100, max_subset_size=subset)
    finally:
        np.random.set_state(state)


def test_kid_draws_the_subsets_clean_fid_draws():
    """clean-fid scores a generated set against a reference as kernel_distance(reference, generated); with
    N well above the subset size the draws decide the value, so equality checks the draw order."""
    real, fake = synthetic(60, seed=8).numpy(), synthetic(50, shift=0.2, seed=9).numpy()
    mean, _ = kid_from_features(torch.from_numpy(fake), torch.from_numpy(real), subset_size=10, seed=2020)
    assert mean == pytest.approx(_clean_fid_kid(real, fake, 10), rel=1e-5)    # clean-fid sums in float32
    assert mean != pytest.approx(_clean_fid_kid(fake, real, 10), rel=1e-3)     # the other order differs


def test_clean_modes_resize_differently():
    images = fmnist(2)
    x = {p: HF.inception_input(images, get_protocol(p).feature_input) for p in MODES}
    assert (x["clean-fid"] - x["clean-fid-legacy-tensorflow"]).abs().max() > 0.05
    assert (x["clean-fid-legacy-pytorch"] - x["clean-fid-legacy-tensorflow"]).abs().max() > 0.01


@pytest.mark.slow
@pytest.mark.parametrize("protocol", list(MODES))
def test_clean_fid_modes_fid_equals_clean_fids_own_fid(clean_fid_features, protocol):
    from cleanfid.fid import fid_from_feats
    theirs, ours = clean_fid_features[protocol]
    assert fid_from_features(torch.from_numpy(ours[3:]), torch.from_numpy(ours[:3])) == pytest.approx(
        fid_from_feats(theirs[:3], theirs[3:]), rel=1e-3)


# ---------------------------------------------------------------- --protocol on eval and suites
def _rows(path):
    import json
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def tiny_tokenizer_run(tmp_path_factory):
    from harness.training.train_tokenizer import train_tokenizer
    run = tmp_path_factory.mktemp("vq")
    train_tokenizer("vq-tiny", run, overrides=["steps=2", "batch_size=8", "perceptual_weight=0", "disc_weight=0",
                                              "ckpt_every=2"], dataset="procedural", progress=False)
    return run


def test_generator_eval_under_adm_against_a_reference_batch(tiny_tokenizer_run, tmp_path, monkeypatch):
    from harness.core.contracts import SamplerConfig
    from harness.core.results import ResultsStore, row_extra
    from harness.evaluation.record_generation import evaluate_generator_and_record
    from harness.evaluation.reference import build_reference
    from harness.training.train_generator import train_generator
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    gen = train_generator("ar-tiny", tiny_tokenizer_run, tmp_path / "ar",
                          overrides=["steps=2", "batch_size=8", "ckpt_every=2"], progress=False)
    ref = tmp_path / "ref.npz"
    build_reference("procedural", "train", ref, n_images=8, n_stats=8)
    store = ResultsStore(tmp_path / "results.jsonl")
    rows = evaluate_generator_and_record(gen, store, run_id="ar", sampler=SamplerConfig(), n_samples=8,
                                         metrics=("gfid", "sfid", "precision", "recall"), device="cpu",
                                         protocol="adm", reference=ref, unguided=False)
    assert {r["metric"] for r in rows} == {"gfid", "sfid", "precision", "recall"}
    assert all(r["protocol"] == "adm" and row_extra(r)["settings"]["reference"]["sha256"] for r in rows)
    with pytest.raises(VQBenchError, match="does not define gkid"):
        evaluate_generator_and_record(gen, store, run_id="ar", sampler=SamplerConfig(), n_samples=8,
                                      metrics=("gkid",), device="cpu", protocol="adm", unguided=False)


def test_eval_under_three_protocols_keeps_one_row_per_metric_and_protocol(tiny_tokenizer_run, tmp_path, monkeypatch):
    from harness.core.results import ResultsStore
    from harness.evaluation.record import evaluate_and_record
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    store = ResultsStore(tmp_path / "results.jsonl")
    for protocol in ("torch-fidelity", "adm", "clean-fid", "torch-fidelity"):
        evaluate_and_record(tiny_tokenizer_run, store, run_id="vq", dataset=None, split="test", n_eval=6,
                            metrics=("psnr", "rfid"), batch_size=6, device="cpu", protocol=protocol)
    rows = _rows(tmp_path / "results.jsonl")
    assert sorted((r["metric"], r["protocol"]) for r in rows) == sorted([
        ("psnr", "canonical"), ("rfid", "torch-fidelity"), ("rkid", "torch-fidelity"),
        ("rkid_std", "torch-fidelity"), ("rfid", "adm"), ("rfid", "clean-fid"), ("rkid", "clean-fid"),
        ("rkid_std", "clean-fid")])                         # ADM defines no KID; one psnr row
    fid = {r["protocol"]: r["value"] for r in rows if r["metric"] == "rfid"}
    assert fid["adm"] == pytest.approx(fid["torch-fidelity"], rel=1e-6)   # same features, same FID
    assert fid["clean-fid"] != pytest.approx(fid["torch-fidelity"], rel=1e-3)
    with pytest.raises(VQBenchError, match="protocol 'clean-fid' does not define precision"):
        evaluate_and_record(tiny_tokenizer_run, store, run_id="vq", dataset=None, split="test", n_eval=6,
                            metrics=("precision-recall",), batch_size=6, device="cpu", protocol="clean-fid")


# ---------------------------------------------------------------- titok (1d-tokenizer's uint8 truncation)
def _titok_levels(images01: torch.Tensor) -> torch.Tensor:
    """1d-tokenizer's evaluator: ``(images * 255).to(torch.uint8)`` on images in [0, 1]."""
    return (images01 * 255).to(torch.uint8)


def test_titok_truncates_as_its_evaluator_and_keeps_real_images_levels():
    """At 299 px the resize is the identity, so the network input shows the uint8 levels themselves
    ((v - 128) / 128 is exact for integer v)."""
    titok = get_protocol("titok").feature_input
    def levels(images01):
        return HF.inception_input(images01 * 2 - 1, titok)[:, :1] * 128 + 128
    u = torch.arange(299 * 299, dtype=torch.float32).remainder(256).view(1, 1, 299, 299)
    assert torch.equal(levels(u / 255), _titok_levels(u / 255).float())        # real images keep their levels
    recon01 = torch.rand(2, 1, 299, 299, generator=torch.Generator().manual_seed(3))
    ours, theirs = levels(recon01), _titok_levels(recon01).float()
    assert (ours == theirs).float().mean() > 0.9999                             # truncated, as their evaluator
    assert (ours != (recon01 * 255).round()).float().mean() > 0.3               # not rounded


def test_titok_features_equal_torch_fidelity_on_truncated_images(torch_fidelity_weights, monkeypatch, tmp_path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))
    real = fmnist(2)
    recon = (real * 0.8 + 0.05).clamp(-1, 1)                  # values between levels: truncation matters
    ours = HF.FIDInception(weights=torch_fidelity_weights, check_hash=False).features(
        recon, get_protocol("titok").feature_input)
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                      feature_extractor_weights_path=str(torch_fidelity_weights))
    with torch.no_grad():
        (pool3,) = net(_titok_levels((recon + 1) / 2))
        (rounded,) = net(((recon + 1) * 127.5).round().to(torch.uint8))
    torch.testing.assert_close(ours.pool3, pool3, atol=1e-4, rtol=1e-4)
    assert (pool3 - rounded).abs().max() > 1e-3                # the truncation is visible in the features
