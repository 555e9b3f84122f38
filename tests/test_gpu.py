"""The contract on CUDA (`-m gpu`; skipped without a CUDA device, deselected by default): every tiny
tokenizer and generator preset runs forward, backward, encode/decode and sampling on the GPU in fp32
and under bf16 autocast, and a tiny training run with precision=bf16 stays finite. Run on a lent GPU
with `python -m pytest -m gpu` (benchmarks/gpu_check.sh does)."""
import os

import pytest
import torch

from harness.core.contracts import Conditioning, SamplerConfig
from harness.core.registry import GENERATORS, TOKENIZERS
from harness.models.catalog import build_generator, build_tokenizer, load_all

load_all()
# VQBENCH_GPU_TEST_DEVICE=cpu runs the same checks on the CPU (how this file's logic is checked without a GPU)
DEVICE = os.environ.get("VQBENCH_GPU_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]
TINY_TOKENIZERS = [e.name for e in TOKENIZERS.entries() if e.meta.get("scale") == "tiny"]
TINY_GENERATORS = [e.name for e in GENERATORS.entries() if e.meta.get("scale") == "tiny"]
PAIRS = {"car-tiny": "cvq-tiny", "far-tiny": "fq-tiny"}          # others run on vq-tiny's layout
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _autocast(precision):
    dtype = PRECISIONS[precision]
    return torch.autocast(DEVICE, dtype=dtype or torch.float32, enabled=dtype is not None)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("preset", TINY_TOKENIZERS)
def test_tokenizer_contract_on_cuda(preset, precision):
    torch.manual_seed(0)
    cfg, model = build_tokenizer(preset)
    model.to(DEVICE).train()
    x = torch.rand(4, cfg.in_channels, cfg.resolution, cfg.resolution, device=DEVICE) * 2 - 1
    with _autocast(precision):
        out = model(x)
        loss = sum(out.losses.values()) + (out.reconstruction.float() - x).pow(2).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), _autocast(precision):
        idx = model.encode(x)
        assert idx.device.type == DEVICE and idx.dtype == torch.long
        assert torch.equal(model(x).indices, idx)
        rec = model.decode(idx)
    assert rec.shape == x.shape and torch.isfinite(rec).all()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("preset", TINY_GENERATORS)
def test_generator_trains_and_samples_on_cuda(preset, precision):
    torch.manual_seed(0)
    _, tok = build_tokenizer(PAIRS.get(preset, "vq-tiny"))
    tok.to(DEVICE).eval()
    _, gen = build_generator(preset, {}, tok, Conditioning("class", num_classes=10))
    gen.to(DEVICE).train()
    x = torch.rand(4, tok.in_channels, tok.resolution, tok.resolution, device=DEVICE) * 2 - 1
    with torch.no_grad():
        idx = tok.encode(x)                      # valid codes of this layout, whatever its shape
    labels = torch.arange(4, device=DEVICE) % 10
    with _autocast(precision):
        loss = gen.loss(idx, labels)
    loss.backward()
    assert torch.isfinite(loss)
    gen.eval()
    with torch.no_grad(), _autocast(precision):
        samples = gen.sample(4, labels, sampler=SamplerConfig(cfg_scale=2.0))
    assert samples.device.type == DEVICE and samples.shape == idx.shape and samples.dtype == torch.long
    assert bool((samples >= 0).all())
    with torch.no_grad():
        images = tok.decode(samples)             # every sampled code is one the tokenizer can decode
    assert torch.isfinite(images).all()


def test_tiny_training_in_bf16_on_cuda(tmp_path):
    from tokenizer_helpers import TINY_VQ_SETTINGS
    from harness.training.train_tokenizer import train_tokenizer
    final = train_tokenizer("vq-tiny", tmp_path / "run", overrides=list(TINY_VQ_SETTINGS) + ["precision=bf16"],
                            dataset="procedural", device=DEVICE, progress=False)
    from safetensors.torch import load_file
    weights = load_file(final / "weights.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
