"""The quantizer interface (harness.models.quantizers.base), checked on every quantizer class in the
package: a new quantizer module is tested once it has a case in CASES."""
import importlib
import inspect
import pkgutil

import pytest
import torch

import harness.models.quantizers as package
from harness.models.quantizers.base import Quantizer
from harness.models.quantizers.channel import ChannelQuantizer
from harness.models.quantizers.factorized import FactorizedQuantizer
from harness.models.quantizers.fsq import FSQAdapter
from harness.models.quantizers.lfq import LFQAdapter
from harness.models.quantizers.rvq import ResidualVQAdapter
from harness.models.quantizers.simvq import SimVQAdapter
from harness.models.quantizers.vq import VectorQuantizer

# id -> (build a tiny instance, input shape with the code dimension last, index shape)
CASES = {
    "vq": (lambda: VectorQuantizer(16, 4), (2, 3, 3, 4), (2, 3, 3)),
    "vq-l2": (lambda: VectorQuantizer(16, 4, l2_norm=True), (2, 3, 3, 4), (2, 3, 3)),
    "vq-rotation": (lambda: VectorQuantizer(16, 4, rotation_trick=True), (2, 3, 3, 4), (2, 3, 3)),
    "channel": (lambda: ChannelQuantizer(16, 9), (2, 5, 9), (2, 5)),
    "factorized": (lambda: FactorizedQuantizer(2, 16, 4, disentangle_weight=0.1), (2, 3, 3, 2, 4), (2, 3, 3, 2)),
    "fsq": (lambda: FSQAdapter((4, 4, 4), 3), (2, 3, 3, 3), (2, 3, 3)),
    "lfq": (lambda: LFQAdapter(64, 6, entropy_weight=0.1, commitment_weight=0.25), (2, 3, 3, 6), (2, 3, 3)),
    "simvq": (lambda: SimVQAdapter(16, 4), (2, 3, 3, 4), (2, 3, 3)),
    "rvq": (lambda: ResidualVQAdapter(16, 4, depth=2), (2, 3, 3, 4), (2, 3, 3, 2)),
}


def concrete_quantizer_classes() -> set[type]:
    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, Quantizer) and cls.__module__ == module.__name__
                    and cls.forward is not Quantizer.forward and cls.lookup is not Quantizer.lookup):
                found.add(cls)
    return found


def test_every_quantizer_class_has_a_case():
    tested = {type(build()) for build, _, _ in CASES.values()}
    assert concrete_quantizer_classes() == tested


@pytest.mark.parametrize("case", CASES)
def test_quantizer_interface(case):
    build, shape, index_shape = CASES[case]
    torch.manual_seed(0)
    quantizer = build()
    assert all(isinstance(getattr(quantizer, a), int) for a in ("codebook_size", "code_dim", "num_factors"))

    quantizer.train()
    z = torch.randn(shape, requires_grad=True)
    out = quantizer(z)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == index_shape and out.indices.dtype == torch.long
    assert 0 <= int(out.indices.min()) and int(out.indices.max()) < quantizer.codebook_size
    assert all(torch.isfinite(v).all() for v in out.losses.values())
    (out.quantized.square().sum() + sum(out.losses.values())).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0

    quantizer.eval()
    with torch.no_grad():
        z = torch.randn(shape)
        out = quantizer(z)
        codes = quantizer.lookup(out.indices)
    assert codes.shape == out.quantized.shape and codes.shape[-1] == quantizer.code_dim
    torch.testing.assert_close(codes, out.quantized, rtol=0, atol=1e-5)


def test_channel_quantizer_zeroes_dropped_channels_and_scores_only_active_ones():
    torch.manual_seed(0)
    quantizer = ChannelQuantizer(16, 9)
    z = torch.randn(2, 5, 9, requires_grad=True)
    out = quantizer(z, active_channels=2)
    active = quantizer(z[:, :2])
    assert torch.equal(out.quantized[:, 2:], torch.zeros(2, 3, 9))
    torch.testing.assert_close(out.quantized[:, :2], active.quantized)
    assert torch.equal(out.indices, quantizer(z).indices)                  # every channel still tokenized
    torch.testing.assert_close(out.losses["codebook"], active.losses["codebook"])


def test_factorized_sub_codebooks_are_independent():
    torch.manual_seed(0)
    quantizer = FactorizedQuantizer(2, 16, 4)
    z = torch.randn(2, 3, 2, 4)
    first = quantizer(z).indices
    z[..., 1, :] = torch.randn(2, 3, 4)                                   # change only factor 1's input
    second = quantizer(z).indices
    assert torch.equal(first[..., 0], second[..., 0])
    assert [name for name, _ in quantizer.named_parameters()] == ["0.embedding.weight", "1.embedding.weight"]
