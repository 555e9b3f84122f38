"""Contract tests parametrized over every registered tokenizer preset: a new preset is tested the
moment it is registered. Tiny/small presets run forward and backward on CPU; paper presets are
built on the meta device (no memory) and checked for a consistent layout."""
import pytest
import torch

from harness.models.catalog import build_tokenizer, load_all, parameter_count
from harness.core.contracts import Tokenizer, TokenizerOutput
from harness.core.registry import TOKENIZERS

load_all()
RUNNABLE = [e.name for e in TOKENIZERS.entries() if e.meta.get("scale") in ("tiny", "small")]
PAPER = [e.name for e in TOKENIZERS.entries() if e.meta.get("scale") == "paper"]


def test_every_preset_declares_a_scale_and_every_family_has_a_tiny_preset():
    families = {e.meta.get("family") for e in TOKENIZERS.entries()}
    for e in TOKENIZERS.entries():
        assert e.meta.get("scale") in ("tiny", "small", "paper"), e.name
    tiny_families = {e.meta.get("family") for e in TOKENIZERS.entries() if e.meta.get("scale") == "tiny"}
    assert families == tiny_families


def _images(cfg, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.in_channels, cfg.resolution, cfg.resolution, generator=g) * 2 - 1


@pytest.mark.parametrize("preset", RUNNABLE)
def test_contract(preset):
    torch.manual_seed(0)
    cfg, model = build_tokenizer(preset)
    assert isinstance(model, Tokenizer)
    layout = model.layout
    x = _images(cfg)

    model.train()
    out = model(x)
    assert isinstance(out, TokenizerOutput)
    assert out.reconstruction.shape == x.shape
    assert out.indices.shape == (2, *layout.index_shape) and out.indices.dtype == torch.long
    assert all(torch.isfinite(v) for v in out.losses.values())      # FSQ has no auxiliary loss
    loss = sum(out.losses.values()) + (out.reconstruction - x).pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        idx = model.encode(x)
        ks = torch.tensor(layout.codebook_sizes).view(1, -1, *([1] * (idx.dim() - 2)))
        assert idx.min() >= 0 and bool((idx < ks).all())
        assert torch.equal(model(x).indices, idx)
        torch.testing.assert_close(model.decode(idx), model(x).reconstruction, rtol=0, atol=1e-6)
        # progressive decoding: keeping every token is decode itself; keeping one token is not
        assert torch.equal(model.decode_prefix(idx, model.prefix_total), model.decode(idx))
        first = model.decode_prefix(idx, 1)
        assert first.shape == x.shape and not torch.equal(first, model.decode(idx))
        with pytest.raises(ValueError):
            model.decode_prefix(idx, model.prefix_total + 1)
        emb = model.code_embeddings(idx)
        assert emb.shape[:2] == (2, layout.num_positions)
    assert model.last_layer_weight().requires_grad


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_build_on_meta(preset):
    _, model = build_tokenizer(preset, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert parameter_count(model) > 1_000_000
    assert len(model.layout.codebook_sizes) == model.layout.num_positions


STATED = [e.name for e in TOKENIZERS.entries() if "paper_params" in e.meta]


@pytest.mark.parametrize("preset", STATED)
def test_parameter_counts_match_the_papers_within_3_percent(preset):
    _, model = build_tokenizer(preset, device="meta")
    stated = TOKENIZERS.entry(preset).meta["paper_params"]
    assert abs(parameter_count(model) - stated) / stated < 0.03


def test_stated_counts_cover_the_families_that_state_them():
    # LlamaGen VQ-16: 72M; VCQ Base: 172M (the papers' own numbers)
    assert {"vq-f16-imagenet", "vcq-base-cosine-imagenet"} <= set(STATED)


def test_vq_paper_grids_and_codebook():
    _, f16 = build_tokenizer("vq-f16-imagenet", device="meta")
    _, f8 = build_tokenizer("vq-f8-imagenet", device="meta")
    assert f16.layout.grid == (16, 16) and f8.layout.grid == (32, 32)
    assert f16.layout.max_codebook_size == f8.layout.max_codebook_size == 16384
