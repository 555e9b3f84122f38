"""Density/coverage against the prdc package (Naeem et al.'s reference code), and the fd-dinov2 protocol
through torch-fidelity's real DINOv2 extractor code, with a test double in torch.hub's cache in place of
the DINOv2 weights (they cannot be downloaded here): the double is NOT DINOv2, so these tests check the
plumbing and the statistics, never DINOv2's numbers."""
import textwrap

import numpy as np
import pytest
import torch

from harness.core.errors import MissingWeightsError
from harness.core.contracts import EvalBatch
from harness.core.registry import METRICS
from harness.evaluation.features import FeatureInput, InceptionFeatures
from harness.evaluation.metrics.fidelity import density_coverage, generation_fidelity
from harness.evaluation.protocols import get_protocol

prdc = pytest.importorskip("prdc")


def _features(n, d=16, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def _prdc(real, fake, k):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):          # prdc prints the set sizes
        return prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)


@pytest.mark.parametrize("k,shift", [(5, 0.0), (5, 0.7), (3, 0.3)])
def test_density_coverage_equal_prdc(k, shift):
    real, fake = _features(60, seed=1), _features(45, shift=shift, seed=2)
    ours = density_coverage(real, fake, k)
    theirs = _prdc(real, fake, k)
    assert ours == pytest.approx((theirs["density"], theirs["coverage"]), rel=1e-12)


def test_density_coverage_fall_as_the_sets_part():
    real = _features(80, seed=3)
    near, far = density_coverage(real, _features(80, seed=4), 5), density_coverage(real, _features(80, shift=2.0, seed=4), 5)
    assert near[0] > 0.5 and near[1] > 0.5 and far[0] < near[0] / 3 and far[1] < near[1] / 3


def test_generation_fidelity_gives_density_coverage_under_the_default_protocol_only_where_defined():
    real, fake = _features(30, seed=5).float(), _features(30, shift=0.2, seed=6).float()
    out = generation_fidelity(InceptionFeatures(fake), InceptionFeatures(real), ("density", "coverage"))
    theirs = _prdc(real.double(), fake.double(), 5)
    assert out["density"][0] == pytest.approx(theirs["density"], rel=1e-9)
    assert out["coverage"][0] == pytest.approx(theirs["coverage"], rel=1e-9)
    from harness.core.errors import VQBenchError
    with pytest.raises(VQBenchError, match="does not define density"):
        generation_fidelity(InceptionFeatures(fake), InceptionFeatures(real), ("density",), get_protocol("adm"))


# ---------------------------------------------------------------- fd-dinov2 with a stand-in in torch.hub's cache
HUBCONF = textwrap.dedent('''
    """TEST DOUBLE, NOT DINOv2: a fixed random projection of 16 x 16 average-pooled 224-px images to 1024
    dimensions, behind DINOv2's hub entry point, so torch-fidelity's extractor runs its real code offline."""
    import os
    import torch

    class StandInNotDINOv2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * 16 * 16, 1024)

        def forward(self, x):
            return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1))

    def dinov2_vitl14(pretrained=True, **kwargs):
        model = StandInNotDINOv2()
        path = os.path.join(torch.hub.get_dir(), "checkpoints", "dinov2_vitl14_pretrain.pth")
        model.load_state_dict(torch.load(path, map_location="cpu"))
        return model
''')


@pytest.fixture
def stand_in_hub(tmp_path, monkeypatch):
    """torch.hub's cache with the stand-in as facebookresearch/dinov2 (its state dict as the checkpoint)."""
    from harness.evaluation import dinov2
    hub = tmp_path / "torch" / "hub"
    repo = hub / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    (hub / "checkpoints").mkdir()
    torch.manual_seed(0)
    proj = torch.nn.Linear(3 * 16 * 16, 1024)
    torch.save({"proj.weight": proj.weight.data, "proj.bias": proj.bias.data},
               hub / "checkpoints" / "dinov2_vitl14_pretrain.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    dinov2.shared_dinov2.cache_clear()
    yield hub
    dinov2.shared_dinov2.cache_clear()


def test_fd_dinov2_without_the_weights_names_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError) as e:
        get_protocol("fd-dinov2").check_available()
    message = str(e.value)
    assert "\n" not in message and "torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')" in message
    assert "facebookresearch_dinov2_main" in message and "dinov2_vitl14_pretrain.pth" in message
    metric = METRICS.get("rfid")()
    with pytest.raises(MissingWeightsError):            # before any image is seen
        metric.set_protocol(get_protocol("fd-dinov2"))
    get_protocol("torch-fidelity").check_available()     # the Inception protocols need nothing more


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 24, 24, generator=g) * 2 - 1)


def test_fd_dinov2_equals_torch_fidelitys_fid_on_its_own_dinov2_features(stand_in_hub):
    """rFID under fd-dinov2 (the Metric API, uneven batches) equals torch-fidelity's FID of the features its
    DINOv2 extractor gives for the same uint8 images; density/coverage equal prdc's on those features."""
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    real, recon = _images(20, 0), _images(20, 1) * 0.8
    protocol = get_protocol("fd-dinov2")
    metrics = {}
    for name in ("rfid", "density-coverage"):
        metrics[name] = METRICS.get(name)()
        metrics[name].set_protocol(protocol)
        for sl in (slice(0, 7), slice(7, 20)):
            metrics[name].update(EvalBatch(real=real[sl], reconstruction=recon[sl]))
    ours = metrics["rfid"].compute() | metrics["density-coverage"].compute()
    assert metrics["rfid"].feature_extractor == "dinov2-vit-l-14" and metrics["rfid"].protocol == "fd-dinov2"
    assert set(ours) == {"rfid", "rkid", "rkid_std", "density", "coverage"}

    net = FeatureExtractorDinoV2("dinov2-vit-l-14", ["dinov2"]).eval()

    def theirs(x):
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        with torch.no_grad():
            return net(u8)[0].double()
    f_real, f_recon = theirs(real), theirs(recon)
    stats = [fid_features_to_statistics(f) for f in (f_recon, f_real)]
    assert ours["rfid"] == pytest.approx(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"],
                                         rel=1e-4)
    reference = _prdc(f_real, f_recon, 5)
    assert (ours["density"], ours["coverage"]) == pytest.approx((reference["density"], reference["coverage"]), abs=1e-9)
    inception = METRICS.get("rfid")()                    # the same images under Inception: another number
    inception.update(EvalBatch(real=real, reconstruction=recon))
    assert inception.compute()["rfid"] != pytest.approx(ours["rfid"], rel=1e-2)


def test_fd_dinov2_through_eval_records_protocol_and_extractor(stand_in_hub, tmp_path):
    from harness.core.results import ResultsStore
    from harness.evaluation.record import evaluate_and_record
    from harness.training.train_tokenizer import train_tokenizer
    run = tmp_path / "vq"
    train_tokenizer("vq-tiny", run, overrides=["steps=2", "batch_size=8", "perceptual_weight=0", "disc_weight=0",
                                              "ckpt_every=2"], dataset="procedural", progress=False)
    store = ResultsStore(tmp_path / "results.jsonl")
    evaluate_and_record(run, store, run_id="vq", dataset=None, split="test", n_eval=12,
                        metrics=("rfid", "density-coverage"), batch_size=6, device="cpu", protocol="fd-dinov2")
    rows = store.read()
    assert set(rows["metric"]) == {"rfid", "rkid", "rkid_std", "density", "coverage"}
    assert set(rows["protocol"]) == {"fd-dinov2"} and set(rows["feature_extractor"]) == {"dinov2-vit-l-14"}
    assert FeatureInput(network="dinov2-vit-l-14").tag == "dinov2-vit-l-14"   # its own feature cache key
