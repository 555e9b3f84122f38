"""Contract tests for every registered generator preset, plus the shared transformer and sampling blocks.

Every ``scale="tiny"`` preset is built on each tiny layout its ``layouts`` metadata names (constant
spatial/channel/latent, variable K_t for "latent", factorized for "factorized"), so presets registered
later by other modules are covered the moment they exist. Paper presets build on the meta device.
"""
from __future__ import annotations

import math

import pytest
import torch

from harness.models.catalog import parameter_count
from harness.core.contracts import Conditioning, SamplerConfig, TokenLayout
from harness.core.errors import VQBenchError
from harness.models.sampling import (codebook_capacity_ratio, filter_top_k, filter_top_p, guidance_scales,
                                         sample_logits)
from harness.models.transformer import Transformer
from harness.core.registry import GENERATORS

K = 16
COND = Conditioning(kind="class", num_classes=3)
LAYOUTS = {
    "spatial": TokenLayout.constant(6, K, position_kind="spatial", grid=(2, 3)),
    "channel": TokenLayout.constant(5, K, position_kind="channel"),
    "latent": TokenLayout.constant(6, K, position_kind="latent"),
    "variable": TokenLayout(6, (2, 3, 5, 8, 12, 16), position_kind="latent"),
    "factorized": TokenLayout.constant(6, K, num_factors=2, grid=(2, 3)),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning threads
    make them ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cases():
    cases = []
    for e in GENERATORS.entries():
        if e.meta.get("scale") != "tiny":
            continue
        kinds = list(e.meta.get("layouts", ()))
        if "latent" in kinds:
            kinds.append("variable")
        cases += [pytest.param(e.name, kind, id=f"{e.name}-{kind}") for kind in kinds]
    return cases


CASES = _cases()
PAPER = [e.name for e in GENERATORS.entries() if e.meta.get("scale") == "paper"]
STATED = [e.name for e in GENERATORS.entries() if "paper_params" in e.meta]


def build(name: str, layout_kind: str, seed: int = 0):
    """A tiny preset with random (not zero-initialised) weights, so the tests see non-trivial logits."""
    torch.manual_seed(seed)
    layout = LAYOUTS[layout_kind]
    model = GENERATORS.get(name)().build(layout, COND, codebook=torch.randn(layout.max_codebook_size, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval(), layout


def random_indices(layout: TokenLayout, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(layout.codebook_sizes).view(1, -1, *([1] * (len(layout.index_shape) - 1)))
    return (torch.rand((n, *layout.index_shape), generator=g) * sizes).long()


def draw(model, n=4, seed=0, **sampler):
    cond = torch.arange(n) % COND.num_classes
    return model.sample(n, cond, sampler=SamplerConfig(**sampler), generator=torch.Generator().manual_seed(seed))


def assert_valid(samples: torch.Tensor, layout: TokenLayout, n: int):
    assert samples.dtype == torch.int64 and samples.shape == (n, *layout.index_shape)
    sizes = torch.tensor(layout.codebook_sizes).view(1, -1, *([1] * (len(layout.index_shape) - 1)))
    assert (samples >= 0).all() and (samples < sizes).all()


# ---------------------------------------------------------------- registry
def test_every_preset_declares_its_layouts_and_scale():
    assert {"ar-tiny", "far-tiny", "ar-b", "ar-l", "ar-xl", "far-base", "far-large"} <= set(GENERATORS.names())
    for e in GENERATORS.entries():
        assert e.meta.get("scale") in ("tiny", "small", "paper"), e.name
        assert e.meta.get("family"), e.name
        assert set(e.meta.get("layouts", ())) <= {"spatial", "channel", "latent", "factorized"}, e.name
        assert e.meta.get("layouts"), e.name
    families = {e.meta["family"] for e in GENERATORS.entries()}
    for family in families:   # every family has a tiny preset, so the contract tests below cover it
        assert GENERATORS.names(family=family, scale="tiny"), family


# ---------------------------------------------------------------- contract, every tiny preset
@pytest.mark.parametrize("name,kind", CASES)
def test_loss_is_finite_and_backward_runs(name, kind):
    model, layout = build(name, kind)
    model.train()
    indices = random_indices(layout, 3)
    loss = model.loss(indices, torch.tensor([0, 1, 2]))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name,kind", CASES)
def test_samples_are_valid_and_reproducible(name, kind):
    model, layout = build(name, kind)
    plain = draw(model)
    assert_valid(plain, layout, 4)
    assert torch.equal(plain, draw(model))                              # same seed, same samples
    guided = draw(model, cfg_scale=3.0, cfg_schedule="cosine", cfg_power=1.5, top_k=5, top_p=0.9)
    assert_valid(guided, layout, 4)
    assert torch.equal(guided, draw(model, cfg_scale=3.0, cfg_schedule="cosine", cfg_power=1.5, top_k=5,
                                    top_p=0.9))
    other = [draw(model, seed=s) for s in (1, 2, 3)]
    assert any(not torch.equal(plain, o) for o in other)              # the seed matters


@pytest.mark.parametrize("name,kind", CASES)
def test_cfg_scale_one_equals_no_guidance(name, kind):
    # 1 + 1e-6 takes the batched cond + uncond path; its conditional rows must give the unguided samples
    model, _ = build(name, kind)
    assert torch.equal(draw(model, cfg_scale=1.0 + 1e-6), draw(model, cfg_scale=1.0))


@pytest.mark.parametrize("name,kind", [c for c in CASES if c.values[1] != "variable"])
def test_codebook_aware_cfg_is_ordinary_cfg_on_a_constant_codebook(name, kind):
    model, _ = build(name, kind)
    for schedule in ("constant", "cosine"):
        ordinary = draw(model, cfg_scale=4.0, cfg_schedule=schedule, cfg_power=1.5)
        aware = draw(model, cfg_scale=4.0, cfg_schedule=schedule, cfg_power=1.5, codebook_aware_cfg=True)
        assert torch.equal(ordinary, aware)


@pytest.mark.parametrize("name,kind", [c for c in CASES if GENERATORS.entry(c.values[0]).meta.get("kv_cache")])
def test_kv_cache_sampling_equals_full_recomputation(name, kind):
    model, _ = build(name, kind)
    for sampler in ({}, {"cfg_scale": 3.0, "cfg_schedule": "linear"}):
        assert torch.equal(draw(model, kv_cache=True, **sampler), draw(model, kv_cache=False, **sampler))


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_build_on_meta(name):
    e = GENERATORS.entry(name)
    with torch.device("meta"):
        model = e.obj().build(e.meta["paper_layout"], e.meta["paper_conditioning"])
    assert parameter_count(model) > 50e6


@pytest.mark.parametrize("name", STATED)
def test_paper_parameter_counts_within_3_percent(name):
    e = GENERATORS.entry(name)
    with torch.device("meta"):
        model = e.obj().build(e.meta["paper_layout"], e.meta["paper_conditioning"])
    assert abs(parameter_count(model) / e.meta["paper_params"] - 1) < 0.03, parameter_count(model)


def test_paper_architectures():
    ar_b, ar_xl = GENERATORS.get("ar-b")(), GENERATORS.get("ar-xl")()
    assert (ar_b.depth, ar_b.heads, ar_b.width) == (12, 12, 768)             # VCQ App. A
    assert (ar_xl.depth, ar_xl.heads, ar_xl.width) == (32, 20, 1280)
    far_l = GENERATORS.get("far-large")()
    assert (far_l.depth, far_l.head_depth, far_l.width, far_l.heads) == (36, 4, 1280, 20)   # FQGAN Table 7
    with torch.device("meta"):
        b = ar_b.build(GENERATORS.entry("ar-b").meta["paper_layout"], Conditioning("class", 1000))
    assert 110e6 < parameter_count(b) < 112e6        # LlamaGen GPT-B: 111M


# ---------------------------------------------------------------- AR specifics
def test_ar_vcq_masking_in_the_loss():
    # a fresh AR has a zero output layer: uniform over the K_t allowed codes, so the loss is mean log K_t
    layout = LAYOUTS["variable"]
    model = GENERATORS.get("ar-tiny")().build(layout, COND).eval()
    loss = model.loss(random_indices(layout, 4), torch.tensor([0, 1, 2, 3]))
    expected = sum(math.log(k) for k in layout.codebook_sizes) / layout.num_positions
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ar_condition_dropout_replaces_labels_by_the_null_class():
    from dataclasses import replace
    cfg = replace(GENERATORS.get("ar-tiny")(), class_dropout=1.0)
    torch.manual_seed(0)
    model = cfg.build(LAYOUTS["spatial"], COND)
    with torch.no_grad():
        model.head.weight.normal_()
    idx = random_indices(LAYOUTS["spatial"], 3)
    train_loss = model.train().loss(idx, torch.tensor([0, 1, 2]))
    null_loss = model.eval().loss(idx, torch.full((3,), COND.null_label))
    cond_loss = model.eval().loss(idx, torch.tensor([0, 1, 2]))
    assert train_loss.item() == pytest.approx(null_loss.item(), rel=1e-6)
    assert cond_loss.item() != pytest.approx(null_loss.item(), rel=1e-6)


def test_codebook_aware_cfg_changes_samples_on_a_variable_codebook():
    model, _ = build("ar-tiny", "variable")
    samples = [draw(model, n=8, cfg_scale=6.0, codebook_aware_cfg=aware) for aware in (False, True)]
    assert not torch.equal(*samples)
    # position 0 has K_t = K_min: no guidance there, so it matches unguided sampling
    assert torch.equal(samples[1][:, 0], draw(model, n=8)[:, 0])


@pytest.mark.parametrize("kind", ["text", "none"])
def test_ar_text_and_unconditional(kind):
    cond_spec = Conditioning(kind="text", text_dim=5) if kind == "text" else Conditioning(kind="none")
    model = GENERATORS.get("ar-tiny")().build(LAYOUTS["spatial"], cond_spec).train()
    cond = torch.randn(3, 4, 5) if kind == "text" else None
    loss = model.loss(random_indices(LAYOUTS["spatial"], 3), cond)
    loss.backward()
    assert torch.isfinite(loss)
    out = model.sample(3, cond, sampler=SamplerConfig(cfg_scale=2.0), generator=torch.Generator().manual_seed(0))
    assert_valid(out, LAYOUTS["spatial"], 3)


def test_bad_inputs_are_one_line_errors():
    model, _ = build("ar-tiny", "spatial")
    with pytest.raises(VQBenchError, match="layout"):
        model.loss(torch.zeros(2, 5, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(VQBenchError, match="labels"):
        model.loss(torch.zeros(2, 6, dtype=torch.long), torch.tensor([0, 7]))
    with pytest.raises(VQBenchError, match="num_factors"):
        GENERATORS.get("ar-tiny")().build(LAYOUTS["factorized"], COND)
    with pytest.raises(VQBenchError, match="factorized"):
        GENERATORS.get("far-tiny")().build(LAYOUTS["spatial"], COND)


@pytest.mark.parametrize("name,kind", [("ar-tiny", "variable"), ("ar-tiny", "channel"), ("far-tiny", "factorized")])
def test_greedy_samples_are_the_argmax_of_the_teacher_forced_logits(name, kind):
    # the training path (teacher forcing) and the sampling path agree position by position: an
    # off-by-one between them, or a cond/uncond mix-up, would break this
    model, layout = build(name, kind)
    labels = torch.tensor([0, 1, 2, 0])
    greedy = model.sample(4, labels, sampler=SamplerConfig(temperature=0.0))
    assert torch.equal(model.logits(greedy, labels).argmax(-1), greedy)
    loss_of_greedy = model.loss(greedy, labels)
    assert loss_of_greedy < model.loss(random_indices(layout, 4), labels)


# ---------------------------------------------------------------- FAR heads
@pytest.mark.parametrize("head", ["ar", "linear", "mlp"])
def test_far_heads(head):
    from dataclasses import replace
    torch.manual_seed(0)
    layout = LAYOUTS["factorized"]
    model = replace(GENERATORS.get("far-tiny")(), head=head).build(layout, COND).eval()
    loss = model.loss(random_indices(layout, 2), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert_valid(draw(model, cfg_scale=2.0), layout, 4)
    # only the factorized AR head lets sub-code 2 depend on sub-code 1 of the same position
    g = torch.randn(2, model.cfg.width)
    a = model.head_logits(g, torch.tensor([[1, 0], [2, 0]]))[1]
    b = model.head_logits(g, torch.tensor([[5, 0], [7, 0]]))[1]
    assert (not torch.allclose(a, b)) == (head == "ar")


# ---------------------------------------------------------------- building blocks
def test_transformer_cache_matches_full_forward_and_is_causal():
    torch.manual_seed(0)
    for qk_norm in (False, True):
        net = Transformer(32, 2, 4, multiple_of=8, qk_norm=qk_norm).eval()
        x = torch.randn(2, 9, 32)
        full = net(x)
        cache = net.new_cache(2, 9)
        parts = [net(x[:, :4], cache=cache), net(x[:, 4:6], cache=cache, start_pos=4)]
        parts += [net(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(6, 9)]
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
        changed = x.clone()
        changed[:, 5:] += 1
        torch.testing.assert_close(net(changed)[:, :5], full[:, :5])
    bidirectional = Transformer(32, 1, 4, causal=False, multiple_of=8).eval()
    y = bidirectional(x)
    changed = x.clone()
    changed[:, -1] += 1
    assert not torch.allclose(bidirectional(changed)[:, 0], y[:, 0])


def test_guidance_schedules():
    s = SamplerConfig(cfg_scale=5.0, cfg_schedule="cosine", cfg_power=2.0)
    w = guidance_scales(s, 4)
    u = torch.arange(4, dtype=torch.float64) / 4
    torch.testing.assert_close(w, 1 + 4 * (1 - torch.cos(math.pi * u ** 2)) / 2)
    assert w[0] == 1.0 and (w.diff() > 0).all()
    torch.testing.assert_close(guidance_scales(SamplerConfig(cfg_scale=3.0, cfg_schedule="linear"), 4),
                               torch.tensor([1.0, 1.5, 2.0, 2.5], dtype=torch.float64))
    assert (guidance_scales(SamplerConfig(cfg_scale=3.0), 4) == 3.0).all()
    # CodebookSize-Aware: no guidance at K_min, the full (scheduled) scale at K_max, log2-linear between
    sizes = (2, 4, 16, 16384)
    r = codebook_capacity_ratio(sizes)
    torch.testing.assert_close(r, torch.tensor([0.0, 1 / 13, 3 / 13, 1.0], dtype=torch.float64))
    aware = guidance_scales(SamplerConfig(cfg_scale=3.0, codebook_aware_cfg=True), 4, sizes)
    torch.testing.assert_close(aware, 1 + 2 * r)
    assert (codebook_capacity_ratio((1024,) * 5) == 1).all()


def test_filters_and_sampling():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    assert torch.isfinite(filter_top_k(logits, 2)).sum() == 2
    probs = logits.softmax(-1)[0]        # 0.636, 0.234, 0.086, ...
    assert torch.isfinite(filter_top_p(logits, 0.5)).sum() == 1
    assert torch.isfinite(filter_top_p(logits, 0.8)).sum() == 2
    assert torch.isfinite(filter_top_p(logits, float(probs[:2].sum()) + 1e-3)).sum() == 3
    assert sample_logits(logits, temperature=0.0).item() == 0
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(4000, 5), top_k=2, generator=g)
    assert set(draws.tolist()) == {0, 1}
    assert abs((draws == 0).float().mean().item() - probs[0] / probs[:2].sum()) < 0.03
