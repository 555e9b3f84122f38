"""Family-specific behaviour beyond the shared contract: CVQ nested dropout, FQ factorization."""
import math

import pytest

import torch

from harness.models.catalog import build_tokenizer


def test_cvq_tokens_are_channels_with_parity_to_vq():
    _, cvq = build_tokenizer("cvq-fmnist")
    _, vq = build_tokenizer("vq-fmnist")
    assert cvq.layout.position_kind == "channel"
    assert cvq.layout.num_positions == vq.layout.num_positions == 49
    assert cvq.code_dim == 7 * 7 == cvq.layout.num_positions          # C = H1 * W1
    _, paper = build_tokenizer("cvq-1024-k16k-imagenet", device="meta")
    assert paper.layout.num_positions == 1024 and paper.code_dim == 16 * 16      # CVQ Table 1: ratio 16


def test_cvq_nested_dropout_masks_trailing_channels_and_scales_gan_weight():
    torch.manual_seed(0)
    _, model = build_tokenizer("cvq-tiny", {"dropout_p": "1.0"})
    model.train()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    seen = set()
    for _ in range(20):
        out = model(x)
        k = int(out.logs["active_channels"])
        seen.add(k)
        c = model.layout.num_positions
        sigmoid = lambda v: 1 / (1 + math.exp(-v))                     # noqa: E731
        expected = sigmoid((k - c / 2) / (c / 8)) / sigmoid((c / 2) / (c / 8))   # 1 at full width
        assert abs(out.gan_weight_scale - expected) < 1e-6
        assert out.indices.shape == (2, c)                             # all channels still tokenized
    assert len(seen) > 5                                               # k ~ U{1..C}

    model.eval()
    with torch.no_grad():
        idx = model.encode(x)
        full = model.decode(idx)
        prefix = model.decode_prefix(idx, 3)
        z = model.quantizer.lookup(idx)
        z[:, 3:] = 0
        torch.testing.assert_close(prefix, model._decode_channels(z))
        assert not torch.allclose(prefix, full)


def test_cvq_quantization_loss_covers_only_active_channels():
    torch.manual_seed(0)
    _, model = build_tokenizer("cvq-tiny", {"dropout_p": "1.0"})
    model.train()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    torch.manual_seed(1)
    out = model(x)
    k = int(out.logs["active_channels"])
    z = model.encoder(x).flatten(2)[:, :k]
    e = model.quantizer.lookup(model.quantizer(z).indices)
    torch.testing.assert_close(out.losses["codebook"], (e - z).pow(2).mean())


def test_fq_sub_codebooks_are_independent_and_regularized():
    torch.manual_seed(0)
    _, model = build_tokenizer("fq-tiny")
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    model.train()
    out = model(x)
    assert out.indices.shape == (2, 64, 2)
    assert {"disentangle", "representation", "codebook_f0", "codebook_f1"} <= set(out.losses)
    assert 0 <= out.losses["disentangle"] <= 0.1 and 0 <= out.losses["representation"] <= 2 * 0.5
    assert not any("teacher" in k for k in model.state_dict())          # frozen teacher, not saved
    model.eval()
    with torch.no_grad():
        idx = model.encode(x)
        swapped = idx.clone()
        swapped[..., 0] = (swapped[..., 0] + 1) % 64                 # change only factor 0
        assert torch.equal(model.encode(x)[..., 1], idx[..., 1])
        assert not torch.allclose(model.decode(swapped), model.decode(idx))
    from harness.models.quantizers.factorized import disentangle_loss as disentangle
    a, b = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 2.0]]])
    assert float(disentangle([a, b])) == 0 and abs(float(disentangle([a, 3 * a])) - 1) < 1e-6


def test_cvq_resampler_serves_any_resolution_with_one_codebook():
    torch.manual_seed(0)
    _, model = build_tokenizer("cvq-resample-tiny")
    assert model.code_dim == 16                                       # 4x4 resampled maps
    model.eval()
    with torch.no_grad():
        for side in (16, 24, 32):
            x = torch.rand(2, 1, side, side) * 2 - 1
            idx = model.encode(x)
            assert idx.shape == (2, 64)                               # 64 channel tokens whatever the size
            out = model(x)
            assert out.reconstruction.shape == x.shape
            torch.testing.assert_close(model.decode(idx, (side, side)), out.reconstruction, rtol=0, atol=1e-6)


def test_fq_user_supplied_clip_and_dinov2_teachers(tmp_path):
    """The paper's teachers from weights the user provides (random weights written here stand in for
    a download; the loading path is the real one), two teachers on FQ-Triple's last sub-codebooks."""
    open_clip = pytest.importorskip("open_clip")
    transformers = pytest.importorskip("transformers")
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    dino = transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14))
    dino.save_pretrained(tmp_path / "dino")
    spec = f"clip:ViT-B-32:{tmp_path / 'clip.pt'},dinov2:{tmp_path / 'dino'}"
    _, model = build_tokenizer("fq-tiny", {"num_factors": "3", "teacher": spec})
    assert [h[-1].out_channels for h in model.rep_heads] == [768, 32]     # CLIP ViT-B/32 width, tiny DINOv2 width
    model.train()
    out = model(torch.rand(2, 1, 16, 16) * 2 - 1)
    assert torch.isfinite(out.losses["representation"]) and out.losses["representation"] > 0


def test_missing_user_teacher_weights_say_what_to_provide(tmp_path):
    from harness.core.errors import MissingWeightsError
    with pytest.raises(MissingWeightsError, match="clip:<open_clip model name>:<weights file>"):
        build_tokenizer("fq-tiny", {"teacher": f"clip:ViT-B-32:{tmp_path / 'nope.pt'}"})
    with pytest.raises(MissingWeightsError, match="dinov2:<local folder"):
        build_tokenizer("fq-tiny", {"teacher": "dinov2:"})
