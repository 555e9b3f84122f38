"""CAR (next-channel prediction) and masked channel-wise / MaskGIT generation: what the parametrized
contract tests in test_generators.py do not cover."""
from __future__ import annotations

import math
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from harness.models.catalog import parameter_count
from harness.core.contracts import Conditioning, SamplerConfig, TokenLayout
from harness.core.errors import MissingWeightsError, VQBenchError
from harness.core.registry import GENERATORS

GENERATORS.names()   # loads the plugin folders (generators/ holds masked.py)
masked_module = sys.modules["vqbench_plugins.generators.masked"]
decoding_mask_count = masked_module.decoding_mask_count
num_masked_for_training = masked_module.num_masked_for_training
random_cosine_mask = masked_module.random_cosine_mask

K, D = 16, 8
COND = Conditioning(kind="class", num_classes=3)
CHANNELS = TokenLayout.constant(5, K, position_kind="channel")
SPATIAL = TokenLayout.constant(6, K, position_kind="spatial", grid=(2, 3))
LABELS = torch.tensor([0, 1, 2])


@pytest.fixture(autouse=True)
def _one_thread():
    # width-32 models: a second thread only adds synchronisation (and contention on a shared machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def car(codebook: torch.Tensor | None = None, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = replace(GENERATORS.get("car-tiny")(), **overrides)
    return cfg.build(CHANNELS, COND, codebook=torch.randn(K, D) if codebook is None else codebook)


def masked(layout: TokenLayout = SPATIAL, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = replace(GENERATORS.get("masked-tiny")(), **overrides).build(layout, COND)
    with torch.no_grad():       # non-trivial logits (the default init gives near-uniform ones)
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def indices(layout: TokenLayout, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, (n, layout.num_positions), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- CAR
def test_car_inputs_are_projected_codebook_embeddings():
    codebook = torch.randn(K, D)
    model = car(codebook).eval()
    idx = indices(CHANNELS, 3)
    torch.testing.assert_close(model.embed_codes(idx), model.projector(codebook[idx]))
    assert model.projector[0].in_features == D and len([m for m in model.projector if hasattr(m, "weight")]) == 2
    # same weights, another codebook: the inputs and so the loss change; the same codebook: same loss
    other = car(torch.randn(K, D)).eval()
    same = car(codebook.clone()).eval()
    loss = model.loss(idx, LABELS)
    assert other.loss(idx, LABELS).item() != pytest.approx(loss.item(), rel=1e-6)
    assert same.loss(idx, LABELS).item() == pytest.approx(loss.item(), rel=1e-6)
    assert not model.codebook.requires_grad and "codebook" in model.state_dict()


def test_car_needs_a_codebook_of_the_layout():
    cfg = GENERATORS.get("car-tiny")()
    with pytest.raises(VQBenchError, match="codebook"):
        cfg.build(CHANNELS, COND)
    with pytest.raises(VQBenchError, match="16 x D"):
        cfg.build(CHANNELS, COND, codebook=torch.randn(K + 1, D))
    with pytest.raises(VQBenchError, match="backbone"):
        replace(cfg, backbone="llama").build(CHANNELS, COND, codebook=torch.randn(K, D))


def _grads(model, idx):
    model.zero_grad(set_to_none=True)
    model.train().loss(idx, LABELS).backward()
    return {name: [p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, name).parameters()]
            for name in ("backbone", "projector", "cond_embed", "head")}


def _check_stages(model):
    idx = indices(CHANNELS, 3)
    model.set_stage(1)
    g = _grads(model, idx)
    assert not any(g["backbone"]) and not any(p.requires_grad for p in model.backbone.parameters())
    assert all(g["projector"]) and all(g["head"]) and any(g["cond_embed"])
    model.set_stage(2)
    g = _grads(model, idx)
    assert sum(g["backbone"]) > len(g["backbone"]) // 2 and all(g["projector"]) and all(g["head"])
    with pytest.raises(VQBenchError, match="stage"):
        model.set_stage(3)


def test_car_stage_one_trains_only_projector_condition_and_head():
    _check_stages(car())


def _tiny_llama(folder):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=50, max_position_embeddings=64)
    lm = LlamaForCausalLM(config)
    lm.save_pretrained(folder)
    return lm


def test_car_loads_a_pretrained_causal_lm_from_a_local_folder(tmp_path):
    lm = _tiny_llama(tmp_path / "lm")
    model = car(backbone=f"hf:{tmp_path / 'lm'}")
    # the saved weights, not a fresh init: every decoder tensor matches the saved model's
    saved = lm.get_decoder().state_dict()
    loaded = model.backbone.decoder.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert model.backbone.width == 32 and model.head.in_features == 32
    _check_stages(model)
    model.eval()
    for sampler in (SamplerConfig(), SamplerConfig(cfg_scale=3.0, cfg_schedule="linear", top_k=8)):
        draws = [model.sample(4, torch.arange(4) % 3, sampler=replace(sampler, kv_cache=cache),
                              generator=torch.Generator().manual_seed(5)) for cache in (True, False)]
        assert torch.equal(*draws)
        assert draws[0].shape == (4, 5) and (draws[0] < K).all()


def test_car_missing_pretrained_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MissingWeightsError, match="backbone=hf:"):
        car(backbone=f"hf:{tmp_path / 'absent'}")
    with pytest.raises(MissingWeightsError, match="Qwen3-4B"):     # the paper preset needs the weights
        GENERATORS.get("car-qwen3-4b")().build(TokenLayout.constant(4, K, position_kind="channel"), COND,
                                              codebook=torch.randn(K, 256))


def test_car_text_conditioning():
    torch.manual_seed(0)
    model = GENERATORS.get("car-tiny")().build(CHANNELS, Conditioning("text", text_dim=6), codebook=torch.randn(K, D))
    text = torch.randn(3, 4, 6)
    loss = model.train().loss(indices(CHANNELS, 3), text)
    loss.backward()
    assert torch.isfinite(loss)
    for cond in (text, text[:, 0]):          # N x L x dim and N x dim
        out = model.sample(3, cond, sampler=SamplerConfig(cfg_scale=2.0), generator=torch.Generator().manual_seed(0))
        assert out.shape == (3, 5) and (out < K).all()


def _learns_one_sequence_per_class(model, layout, steps, lr=1e-2):
    targets = indices(layout, COND.num_classes, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model.loss(targets, LABELS).backward()
        opt.step()
    return targets, model.sample(3, LABELS, sampler=SamplerConfig(temperature=0.0))


def test_car_training_and_sampling_agree_on_channel_positions():
    # next-channel loss and sampling line up (an off-by-one in either would not reproduce the targets)
    targets, greedy = _learns_one_sequence_per_class(car(class_dropout=0.0), CHANNELS, steps=100)
    assert torch.equal(greedy, targets)


# ---------------------------------------------------------------- masked: training schedule
def test_cosine_schedule_masked_counts():
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.999])
    T = 49
    expected = [49, math.ceil(math.cos(math.pi / 8) * T), math.ceil(math.cos(math.pi / 4) * T),
                math.ceil(math.cos(3 * math.pi / 8) * T), 1]
    assert num_masked_for_training(u, T).tolist() == expected
    # the mask draws u first, then the positions: its per-row counts follow the same u
    n = 4000
    mask = random_cosine_mask(n, T, generator=torch.Generator().manual_seed(0))
    u = torch.rand(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask.sum(1), num_masked_for_training(u, T))
    assert abs(mask.float().mean().item() - 2 / math.pi) < 0.02          # E[cos(pi u / 2)] = 2 / pi
    assert abs(mask.float().mean(0) - mask.float().mean()).max() < 0.05   # positions chosen uniformly


def test_masked_loss_is_cross_entropy_on_masked_positions_only(monkeypatch):
    model = masked()
    idx = indices(SPATIAL, 3)
    fixed = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    monkeypatch.setattr(masked_module, "random_cosine_mask", lambda n, T, device=None, generator=None: fixed)
    loss = model.loss(idx, LABELS)      # eval mode: no condition dropout
    logits = model._logits(idx.masked_fill(fixed, model.mask_id), model.cond_embed(LABELS, 3))
    torch.testing.assert_close(loss, F.cross_entropy(logits[fixed], idx[fixed]))
    # targets at unmasked positions do not enter the loss (the inputs there are the targets themselves)
    assert model.mask_id == K and model.tok_embed.num_embeddings == K + 1


def test_masked_condition_dropout_uses_the_null_class():
    model = masked(class_dropout=1.0)
    idx = indices(SPATIAL, 3)
    torch.manual_seed(7)
    dropped = model.train().loss(idx, LABELS)
    torch.manual_seed(7)
    null = model.train().loss(idx, torch.full((3,), COND.null_label))
    assert dropped.item() == pytest.approx(null.item(), rel=1e-6)


# ---------------------------------------------------------------- masked: decoding
def _record_inputs(model):
    seen = []
    model.tok_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    return seen


@pytest.mark.parametrize("steps,T", [(1, 6), (3, 6), (4, 6), (10, 6), (10, 16)])
def test_decoding_fills_every_position_in_steps_passes_following_the_schedule(steps, T):
    layout = TokenLayout.constant(T, K, position_kind="channel")
    model = masked(layout)
    seen = _record_inputs(model)
    out = model.sample(2, LABELS[:2], sampler=SamplerConfig(steps=steps), generator=torch.Generator().manual_seed(0))
    assert len(seen) == steps                           # one forward pass per step
    assert (out != model.mask_id).all() and (out < K).all()
    unknown = T
    for s, tokens in enumerate(seen):
        masked_now = (tokens == model.mask_id).sum(1)
        assert (masked_now == unknown).all(), s
        if s + 1 < steps:                               # MaskGIT: floor(T cos(pi/2 (s+1)/S)), in 1..unknown-1
            unknown = max(1, min(unknown - 1, decoding_mask_count(s, steps, T)))
        # decoded positions keep their code in later steps
        if s > 0:
            kept = seen[s - 1] != model.mask_id
            assert torch.equal(tokens[kept], seen[s - 1][kept])


def test_decoding_step_count_defaults_to_the_preset():
    model = masked()
    seen = _record_inputs(model)
    model.sample(2, LABELS[:2], generator=torch.Generator().manual_seed(0))
    assert len(seen) == model.cfg.default_steps == 4
    assert GENERATORS.get("masked-fmnist")().default_steps == 10 and GENERATORS.get("masked-b")().default_steps == 10


def test_masked_cfg_is_t_lc_minus_t_minus_one_lu():
    # one greedy step decodes every position from l_g = t l_c - (t - 1) l_u (paper Eq. 4)
    model = masked()
    t = 3.0
    out = model.sample(3, LABELS, sampler=SamplerConfig(steps=1, temperature=0.0, cfg_scale=t))
    start = torch.full((3, SPATIAL.num_positions), model.mask_id)
    l_c = model._logits(start, model.cond_embed(LABELS, 3))
    l_u = model._logits(start, model.cond_embed(torch.full((3,), COND.null_label), 3))
    assert torch.equal(out, (t * l_c - (t - 1) * l_u).argmax(-1))
    assert not torch.equal(out, l_c.argmax(-1))         # guidance changed something: the check can fail
    same = model.sample(3, LABELS, sampler=SamplerConfig(steps=1, temperature=0.0, cfg_scale=1.0))
    assert torch.equal(same, l_c.argmax(-1))            # t = 1: the conditional model alone


def test_masked_sampling_is_reproducible_with_a_seed_and_depends_on_it():
    model = masked(TokenLayout(6, (2, 3, 5, 8, 12, 16), position_kind="latent"))

    def draw(seed):
        return model.sample(4, torch.arange(4) % 3, sampler=SamplerConfig(steps=64, cfg_scale=2.0),
                            generator=torch.Generator().manual_seed(seed))
    a = draw(0)
    assert torch.equal(a, draw(0)) and not torch.equal(a, draw(1))
    assert (a < torch.tensor([2, 3, 5, 8, 12, 16])).all()


def test_masked_training_and_decoding_agree():
    # MaskGIT on a spatial layout: the trained model decodes each class's sequence back. Margins, not
    # an exact decode: the trajectory differs with the CPU kernels (ATEN_CPU_CAPABILITY). At 300 steps
    # every seed 0-9 decodes all 18 tokens under both default and avx2 kernels (masked loss < 0.03);
    # a mismatch between the training mask and the decoding order would leave the decode near chance
    # (1/16 per token) and the loss near log 16 = 2.77.
    torch.manual_seed(0)
    model = replace(GENERATORS.get("masked-tiny")(), class_dropout=0.0).build(SPATIAL, COND)
    targets, greedy = _learns_one_sequence_per_class(model, SPATIAL, steps=300)
    accuracy = (greedy == targets).float().mean().item()
    assert accuracy >= 0.9, (accuracy, greedy, targets)
    model.eval()
    torch.manual_seed(1)                # the loss draws random masks: its mean over 20 draws
    loss = sum(model.loss(targets, LABELS).item() for _ in range(20)) / 20
    assert loss < 0.3, loss


# ---------------------------------------------------------------- paper presets
def test_masked_paper_presets_follow_table_1():
    table = {"masked-b": (16, 24, 1024, 4096, 305e6), "masked-l": (16, 32, 1280, 5120, 634e6),
             "masked-h": (16, 36, 1536, 6144, 1.0e9)}
    for name, (heads, depth, width, mlp, params) in table.items():
        e = GENERATORS.entry(name)
        cfg = e.obj()
        assert (cfg.heads, cfg.depth, cfg.width, cfg.mlp_dim, cfg.qk_norm) == (heads, depth, width, mlp, True)
        assert e.meta["paper_body_params"] == params and "paper_params" not in e.meta
        with torch.device("meta"):
            model = cfg.build(e.meta["paper_layout"], e.meta["paper_conditioning"])
        body = model.body_parameter_count()
        assert abs(body / params - 1) < 0.03, body
        assert parameter_count(model) - body == 2 * 16384 * width     # K token rows + the K-way head
