"""VCQ: schedules, the capacity bounds, and per-position codebook limits in the tokenizer."""
import math

import pytest
import torch

from conftest import run_cli
from harness.models.catalog import build_tokenizer
from harness.models.schedules import capacity_cliff, codebook_schedule, constant_cliff, schedule_stats


def test_schedules_follow_the_formula_and_the_paper():
    cos = codebook_schedule("cosine", 2, 16384, 256)
    assert cos[0] == 2 and cos[-1] == 16384 and list(cos) == sorted(cos)
    t = 100
    assert cos[t] == round(2 + 16382 * (1 - math.cos(math.pi * (t / 255) / 2)))
    lin = codebook_schedule("linear", 2, 16384, 256)
    # the paper: Constant K=8192 and VCQ-Linear have nearly identical average K (8192 vs 8193)
    assert schedule_stats(lin, 256).average_codebook_size == pytest.approx(8193, abs=0.5)
    assert codebook_schedule("constant", 2, 16384, 4) == (16384,) * 4
    assert codebook_schedule("power", 2, 100, 3, power=2.0) == (2, round(2 + 98 * 0.25), 100)
    with pytest.raises(ValueError):
        codebook_schedule("exp", 2, 4, 3)


def test_capacity_bounds():
    # ImageNet, K = 16384: the paper's entropy cliff at t* = 2
    assert constant_cliff(1_281_167, 16384) == 2
    assert capacity_cliff((16384,) * 256, 1_281_167) == 2
    assert capacity_cliff((2, 2, 2, 2), 16) == 4 and capacity_cliff((2, 2), 16) is None
    stats = schedule_stats((16,) * 4, image_size=4, dataset_size=256)
    assert stats.bits_per_image == 16 and stats.bits_per_pixel == 1 and stats.capacity_cliff == 2


def test_vcq_indices_respect_per_position_codebook_sizes():
    torch.manual_seed(0)
    _, model = build_tokenizer("vcq-tiny", {"k_min": "2", "k_max": "64"})
    sizes = torch.tensor(model.layout.codebook_sizes)
    assert sizes[0] == 2 and sizes[-1] == 64 and len(set(sizes.tolist())) > 3
    model.eval()
    idx = model.encode(torch.rand(32, 1, 16, 16) * 2 - 1)
    assert bool((idx < sizes).all())
    # the shared codebook: position t's choice is the nearest among exactly the first K_t codes
    assert idx[:, 0].max() <= 1


def test_analyze_schedule_cli(tmp_path):
    out = tmp_path / "kt.csv"
    r = run_cli("analyze", "schedule", "--schedule", "cosine", "--k-min", "2", "--k-max", "16384",
                "--length", "256", "--image-size", "256", "--dataset-size", "1281167", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "capacity-bound t* for N = 1,281,167: 9" in r.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "t,K_t,cumulative_bits" and len(lines) == 257 and lines[-1].startswith("255,16384,")
    bad = run_cli("analyze", "schedule", "--k-min", "10", "--k-max", "4")
    assert bad.returncode == 2 and bad.stderr.startswith("error: analyze schedule")


def test_analyze_schedule_says_where_table_2_and_the_bound_differ():
    table2 = ("--k-min", "2", "--k-max", "16384", "--length", "256", "--image-size", "256", "--dataset-size", "1281167")
    cosine = run_cli("analyze", "schedule", "--schedule", "cosine", *table2)
    assert cosine.returncode == 0 and "Table 2 lists t* = 5 here, not 9" in cosine.stdout
    linear = run_cli("analyze", "schedule", "--schedule", "linear", *table2)
    assert "Table 2 lists t* = 4 here too" in linear.stdout
    other = run_cli("analyze", "schedule", "--schedule", "cosine", *table2[:-1], "10000")
    assert "this setting differs" in other.stdout


def test_paper_presets_layer_normalise_the_vit_input_as_titok_does():
    """TiTok's encoder and decoder apply ln_pre to the concatenated patch + latent sequence; the paper
    presets follow it, the fmnist presets and old checkpoints keep the sequence as it is (README)."""
    paper = build_tokenizer("vcq-large-cosine-imagenet", {}, device="meta")[1]
    assert isinstance(paper.enc_ln_pre, torch.nn.LayerNorm) and isinstance(paper.dec_ln_pre, torch.nn.LayerNorm)
    small = build_tokenizer("vcq-cosine-fmnist", {})[1]
    assert not any("ln_pre" in k for k in small.state_dict())
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    for ln_pre in (True, False):
        torch.manual_seed(0)
        model = build_tokenizer("vcq-tiny", {"ln_pre": str(ln_pre).lower()})[1].eval()
        seen = {}                                  # what each ViT receives
        model.encoder.register_forward_pre_hook(lambda m, args: seen.setdefault("enc", args[0]))
        model.decoder.register_forward_pre_hook(lambda m, args: seen.setdefault("dec", args[0]))
        with torch.no_grad():
            out = model(x)
        for name in ("enc", "dec"):
            normalised = (seen[name].mean(-1).abs().max() < 1e-5
                          and (seen[name].std(-1, unbiased=False) - 1).abs().max() < 1e-3)
            assert bool(normalised) == ln_pre, (name, ln_pre)
        assert torch.allclose(out.reconstruction, model.decode(out.indices), atol=1e-5)


def test_the_fmnist_presets_learn_a_random_position_pair_attention_logit():
    """The fmnist presets' ViTs add a learned logit per head and (query, key) position pair, drawn from
    N(0, 4^2): without it every latent token of an image ends up carrying one vector (README). The paper
    presets have none, as in TiTok, and neither do configs written before the field."""
    from harness.models.vit import Attention
    paper = build_tokenizer("vcq-base-cosine-imagenet", {}, device="meta")[1]
    assert all(m.position_bias is None for m in paper.modules() if isinstance(m, Attention))
    small = build_tokenizer("vcq-cosine-fmnist", {})[1]
    layers = [m for m in small.modules() if isinstance(m, Attention)]
    assert len(layers) == small.cfg.enc_depth + small.cfg.dec_depth
    biases = torch.stack([m.position_bias.detach() for m in layers])
    assert biases.shape[1:] == (small.cfg.enc_heads, 98, 98)             # 49 patches + 49 latents
    assert biases.std().item() == pytest.approx(4.0, rel=0.02) and abs(biases.mean().item()) < 0.05
    # the logit enters the softmax beside q.k / sqrt(d): the attention recomputed by hand
    torch.manual_seed(0)
    attn = Attention(16, 2, position_bias=(5, 4.0))
    x = torch.randn(3, 5, 16)
    q, k, v = attn.qkv(x).view(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5 + attn.position_bias, dim=-1)
    by_hand = attn.proj((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    assert torch.allclose(attn(x), by_hand, atol=1e-5)
    attn(x).square().sum().backward()
    assert attn.position_bias.grad.abs().sum() > 0                        # learned, not fixed
    # a tiny tokenizer with it: tokens stay inside K_t and decode(encode(x)) is the forward reconstruction
    model = build_tokenizer("vcq-tiny", {"attention_position_bias_std": "4"})[1].eval()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out.reconstruction, model.decode(out.indices), atol=1e-5)
    assert bool((out.indices < torch.tensor(model.layout.codebook_sizes)).all())
    assert not any("position_bias" in k for k in build_tokenizer("vcq-tiny", {})[1].state_dict())
