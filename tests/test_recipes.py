"""Paper recipes (harness.core.recipes, harness.models.paper_recipes), the training options they need,
`vqbench describe`, and the paper-preset fixes of issue #11 item 1, each against the paper's text."""
import dataclasses
import json
import math
import re
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli
from harness.core.config import apply_overrides, split_override
from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.core.recipes import Recipe, RecipeValue, assumed, imagenet_steps
from harness.core.registry import GENERATORS, TOKENIZERS, Entry, Registry, TokenizerInfo
from harness.describe import describe
from harness.models.catalog import build_tokenizer, load_all, parameter_count
from harness.models.schedules import schedule_stats
from harness.training.batches import BatchOrder, mirror
from harness.training.optim import OptimizerConfig, adamw, lr_at, per_process_batch
from harness.training.train_generator import GeneratorTrainConfig, train_generator
from harness.training.train_tokenizer import TrainConfig, train_tokenizer

load_all()
PAPER = [(reg, e.name) for reg in (TOKENIZERS, GENERATORS) for e in reg.entries() if e.meta.scale == "paper"]
WITH_RECIPES = [(reg, e.name) for reg in (TOKENIZERS, GENERATORS) for e in reg.entries() if len(e.meta.recipe)]
EVERY_PRESET = [e.name for reg in (TOKENIZERS, GENERATORS) for e in reg.entries()]


def _ids(cases):
    return [name for _, name in cases]


# ------------------------------------------------------------------ every paper preset carries a sourced recipe
@pytest.mark.parametrize("reg,name", PAPER, ids=_ids(PAPER))
def test_every_paper_preset_has_a_recipe_with_a_source_or_an_assumption_for_each_value(reg, name):
    recipe = reg.entry(name).meta.recipe
    assert len(recipe) > 0, f"{name} has no recipe"
    for v in recipe:
        assert v.source_text.strip(), v
        # a stated value names where the paper (or the code a preset follows) says so
        assert v.is_assumed or any(s in v.source_text for s in ("paper", "code")), v


@pytest.mark.parametrize("reg,name", WITH_RECIPES, ids=_ids(WITH_RECIPES))
def test_every_recipe_key_is_a_training_setting_and_applies_cleanly(reg, name):
    config = TrainConfig() if reg is TOKENIZERS else GeneratorTrainConfig()
    recipe = reg.entry(name).meta.recipe
    items = dict(split_override(o) for o in recipe.overrides())
    assert set(items) <= set(config.__dataclass_fields__), set(items) - set(config.__dataclass_fields__)
    apply_overrides(config, items)                   # parses every value and checks its domain


def test_recipes_cite_the_papers_values():
    """Spot checks of values the issue names against the papers' text."""
    vcq = TOKENIZERS.entry("vcq-base-cosine-imagenet").meta.recipe
    assert {k: vcq.get(k).value for k in ("pixel_loss", "disc_weight", "adaptive_disc_weight", "lr_schedule",
                                          "hflip", "global_batch_size", "steps")} == {
        "pixel_loss": "l1", "disc_weight": "0.1", "adaptive_disc_weight": "false", "lr_schedule": "linear",
        "hflip": "true", "global_batch_size": "256", "steps": "1300000"}
    assert not vcq.get("disc_weight").is_assumed and "App. A" in vcq.get("disc_weight").source_text
    ar = GENERATORS.entry("ar-l").meta.recipe
    assert ar.get("decay_norms_and_biases").value == "false" and not ar.get("decay_norms_and_biases").is_assumed
    for name, reg in (("fqgan-dual-imagenet", TOKENIZERS), ("far-base", GENERATORS)):
        r = reg.entry(name).meta.recipe
        assert (r.get("lr").value, r.get("lr_schedule").value) == ("2e-4", "constant")
        assert "FQGAN paper, Sec. 4.1" in r.get("lr").source_text
    mg = TOKENIZERS.entry("cvq-maskgen-256-k16k-imagenet").meta.recipe
    assert (mg.get("lr").value, mg.get("lr_schedule").value, mg.get("min_lr").value) == ("1e-4", "cosine", "5e-5")
    assert mg.get("disc_start").value == str(10 * (1_281_167 // 256))          # "after training 10 epochs"
    masked = GENERATORS.entry("masked-l").meta.recipe
    assert (masked.get("optimizer").value, masked.get("beta2").value, masked.get("lr").value,
            masked.get("global_batch_size").value) == ("adamw", "0.96", "4e-4", "1024")
    # the CVQ paper's numbers are blank in our copy: assumed, saying so
    cvq = TOKENIZERS.entry("cvq-256-k16k-imagenet").meta.recipe
    assert cvq.get("lr").is_assumed and "blank" in cvq.get("lr").source_text
    assert cvq.get("optimizer").value == "adam" and not cvq.get("optimizer").is_assumed
    assert imagenet_steps(100, 256) == 500_400 and int(cvq.get("steps").value) == 500_400


# ------------------------------------------------------------------ the Recipe type and its registration
def test_a_recipe_value_needs_a_source_and_a_setting_is_set_once():
    with pytest.raises(VQBenchError, match="needs a source"):
        RecipeValue("lr", "1e-4", "")
    with pytest.raises(VQBenchError, match="needs a source"):
        RecipeValue("lr", "1e-4", assumed(" "))
    with pytest.raises(VQBenchError, match="sets lr more than once"):
        Recipe.of(("lr", "1e-4", "A"), ("lr", "2e-4", "B"))
    reg = Registry("tokenizer", TokenizerInfo)
    with pytest.raises(VQBenchError, match="tokenizer 't': recipe must be"):
        reg.add("t", object, family="vq", scale="paper", description="d", recipe=("lr=1e-4",))
    r = Recipe.of(("lr", 2e-4, "A"), ("hflip", True, assumed("B")), ("ch_mult", (1, 2), "C"))
    assert r.overrides() == ["lr=0.0002", "hflip=true", "ch_mult=1,2"]
    assert (r + Recipe.of(("lr", "1e-3", "D"))).overrides() == ["hflip=true", "ch_mult=1,2", "lr=1e-3"]


def test_the_users_set_wins_and_a_per_process_batch_replaces_the_recipes_global_one():
    r = Recipe.of(("lr", "2e-4", "A"), ("global_batch_size", "256", "B"), ("steps", "9", "C"))
    assert r.with_overrides(["lr=1e-3"]) == ["global_batch_size=256", "steps=9", "lr=1e-3"]
    assert r.with_overrides(["batch_size=8"]) == ["lr=2e-4", "steps=9", "batch_size=8"]
    assert r.with_overrides([]) == r.overrides()


# ------------------------------------------------------------------ `vqbench describe`
@pytest.mark.parametrize("name", EVERY_PRESET)
def test_describe_prints_architecture_parameters_layout_bits_and_sourced_recipe(name):
    reg = TOKENIZERS if name in TOKENIZERS else GENERATORS
    text = describe(name)
    for part in ("architecture (", "parameters: ", "token layout", "bits per image: ", "training recipe"):
        assert part in text, (part, text)
    recipe = reg.entry(name).meta.recipe
    for v in recipe:
        line = next(l for l in text.splitlines() if l.strip().startswith(f"{v.key} ") and f"= {v.value}" in l)
        assert v.source_text in line and ("[assumed]" in line) == v.is_assumed, line
    assert text.count("[assumed] ") == sum(v.is_assumed for v in recipe)        # the header has "[assumed]:"


def test_describe_counts_and_bits_of_a_paper_preset():
    text = describe("vcq-large-cosine-imagenet")
    _, model = build_tokenizer("vcq-large-cosine-imagenet", device="meta")
    assert f"parameters: {parameter_count(model):,} " in text
    bits = sum(math.log2(k) for k in model.layout.codebook_sizes)
    assert f"bits per image: {bits:,.1f} " in text and "K_t from 2 to 11,264" in text
    fq = describe("fqgan-triple-imagenet")
    assert "3 sub-codes per position" in fq and f"bits per image: {256 * 3 * 14:,.1f} " in fq
    assert "on the paper's layout" in describe("far-base") and "on cvq-tiny's layout" in describe("car-tiny")


def test_describe_cli_prints_and_an_unknown_preset_is_one_line_with_suggestions(cli_env):
    r = run_cli("describe", "masked-b", env=cli_env)
    assert r.returncode == 0 and "masked-generation paper, Sec. 4.1" in r.stdout, r.stderr
    r = run_cli("describe", "vq-f16-imagnet", env=cli_env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: unknown preset")
    assert "did you mean vq-f16-imagenet" in lines[0]


# ------------------------------------------------------------------ the preset fixes
def test_cvq_1024_tokens_are_at_ratio_16_with_256_dim_codes():
    """CVQ Table 1: the 1024-token CVQ has ratio 16, i.e. 1024 channels of 16x16."""
    for name in ("cvq-1024-k16k-imagenet", "cvq-vanilla-1024-k16k-imagenet"):
        cfg, model = build_tokenizer(name, device="meta")
        assert model.down == 16 and model.grid == (16, 16) and model.code_dim == 256
        assert model.layout.num_positions == cfg.num_tokens == 1024


def test_vanilla_cvq_presets_have_no_nested_dropout_as_tables_1_and_3():
    expected = {f"cvq-vanilla-256-k{k}k-imagenet": (256, k * 1024) for k in (1, 4, 16, 64)}   # Table 3
    expected["cvq-vanilla-1024-k16k-imagenet"] = (1024, 16384)                               # Table 1
    assert {n for n in TOKENIZERS.names(family="cvq") if "vanilla" in n} == set(expected)
    for name, (tokens, k) in expected.items():
        cfg, _ = build_tokenizer(name, device="meta")
        assert (cfg.dropout_p, cfg.num_tokens, cfg.codebook_size) == (0.0, tokens, k), name
    # CAR's tokenizer (Tables 4, 7: p = 0.25) keeps its dropout
    assert build_tokenizer("cvq-256-k16k-imagenet", device="meta")[0].dropout_p == 0.25


def test_vq_baselines_have_the_code_dimension_of_cvq():
    """CVQ Sec. 4: 'dimensionality parity' between CVQ and its VQ baselines (Tables 1, 3)."""
    _, cvq = build_tokenizer("cvq-vanilla-256-k16k-imagenet", device="meta")
    for name, grid, k in (("vq-vanilla-256-k1k-imagenet", 16, 1024), ("vq-vanilla-256-k64k-imagenet", 16, 65536),
                          ("vq-vanilla-1024-k16k-imagenet", 32, 16384)):
        cfg, vq = build_tokenizer(name, device="meta")
        assert vq.layout.grid == (grid, grid) and vq.layout.max_codebook_size == k
        assert cfg.codebook_dim == cvq.code_dim == 256 and not cfg.l2_norm
        assert TOKENIZERS.entry(name).meta.recipe.get("optimizer").value == "adam"      # the CVQ setup
    assert not [n for n in TOKENIZERS.names() if "drop" in n and n.startswith("vq-")]    # no "VQ w/ dropout"


def test_maskgen_cvq_has_no_attention_blocks():
    """Masked-generation paper, Sec. 4.1: 'we remove the attention blocks'."""
    from harness.models.nn import AttnBlock
    cfg, model = build_tokenizer("cvq-maskgen-256-k16k-imagenet", device="meta")
    assert not cfg.attention and not any(isinstance(m, AttnBlock) for m in model.modules())
    _, with_attention = build_tokenizer("cvq-256-k16k-imagenet", device="meta")
    assert any(isinstance(m, AttnBlock) for m in with_attention.modules())


def test_vcq_large_has_k_max_11264_as_table_2_cosine_l():
    """VCQ Table 2, 'Cosine-L': K from 2 to 11264, average 4100, BPP 0.042 (Base: 16384, 5964, 0.044)."""
    for name, k_max, average, bpp in (("vcq-large-cosine-imagenet", 11264, 4100, 0.042),
                                      ("vcq-base-cosine-imagenet", 16384, 5964, 0.044)):
        cfg, model = build_tokenizer(name, device="meta")
        stats = schedule_stats(model.layout.codebook_sizes, cfg.resolution)
        assert (cfg.k_min, cfg.k_max) == (2, k_max)
        assert round(stats.average_codebook_size) == average and round(stats.bits_per_pixel, 3) == bpp
    assert all(build_tokenizer(n, device="meta")[0].k_max == 11264 for n in TOKENIZERS.names(family="vcq")
               if n.startswith("vcq-large-"))


def test_fqgan_triple_teachers_supervise_sub_codebooks_2_and_3_in_order(monkeypatch):
    """FQGAN Sec. 4.4 and App. C: DINOv2 supervises sub-codebook 2, CLIP sub-codebook 3; the teacher
    list names them in that order (the first listed teacher takes the second sub-codebook)."""
    torch.manual_seed(0)
    _, model = build_tokenizer("fq-tiny", {"num_factors": "3", "teacher": "alexnet,vgg16"})
    model.train()
    feats = {0: None, 1: None}

    class Fixed(torch.nn.Module):
        def __init__(self, i, dim):
            super().__init__()
            self.i, self.dim = i, dim

        def forward(self, x):
            g = torch.Generator().manual_seed(self.i)
            feats[self.i] = torch.randn(x.shape[0], self.dim, 4, 4, generator=g)
            return feats[self.i]
    dims = [head[-1].out_channels for head in model.rep_heads]
    monkeypatch.setattr(model, "teacher", lambda i, device: Fixed(i, dims[i]))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    out = model(x)
    q = model._quantize(x).quantized                               # N x h x w x k x D
    expected = 0.0
    for i, subcodebook in enumerate((1, 2)):                        # 0-based sub-codebooks 2 and 3
        pred = model.rep_heads[i](q[..., subcodebook, :].permute(0, 3, 1, 2).contiguous())
        target = torch.nn.functional.adaptive_avg_pool2d(feats[i], pred.shape[-2:])
        expected = expected + (1 - torch.nn.functional.cosine_similarity(pred, target, dim=1)).mean()
    torch.testing.assert_close(out.losses["representation"], model.cfg.representation_weight * expected)
    for doc in ((REPO / "tokenizers" / "fq.py").read_text(), (REPO / "README.md").read_text()):
        assert re.search(r"teacher=dinov2:[^`\s]*,clip:", doc)          # the docs list DINOv2, then CLIP
        assert not re.search(r"teacher=clip:[^`\s]*,dinov2:", doc)


def test_cvq_gan_weight_is_the_base_weight_at_full_width():
    """CVQ App. B: with probability 1 - p a step is 'standard training' at the base GAN weight; the
    nested-dropout sigmoid (Eq. 8) is normalised so that k = C gives exactly lambda."""
    gan_weight_scale = sys.modules["vqbench_plugins.tokenizers.cvq"].gan_weight_scale
    for c in (64, 256, 1024):
        assert gan_weight_scale(c, c, c / 8) == 1.0
        scales = [gan_weight_scale(k, c, c / 8) for k in range(1, c + 1)]
        assert all(a < b for a, b in zip(scales, scales[1:])) and scales[0] < 0.025
        assert abs(gan_weight_scale(c // 2, c, c / 8) - 0.5 / (1 / (1 + math.exp(-4)))) < 1e-12
    torch.manual_seed(0)
    _, model = build_tokenizer("cvq-tiny", {"dropout_p": "0.5"})
    model.train()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    seen = {}
    for _ in range(30):
        out = model(x)
        seen[int(out.logs["active_channels"])] = out.gan_weight_scale
    assert seen[64] == 1.0 and len(seen) > 3                     # full-width steps: the base weight


# ------------------------------------------------------------------ the training options recipes need
def test_linear_schedule_holds_then_decays_to_its_floor():
    tc = OptimizerConfig(steps=100, lr=1e-3, min_lr=1e-4, lr_schedule="linear", warmup_steps=10, lr_hold_steps=20)
    assert lr_at(0, tc) == pytest.approx(1e-4) and lr_at(9, tc) == pytest.approx(1e-3)     # warm-up
    assert lr_at(10, tc) == lr_at(29, tc) == 1e-3                                           # the hold
    assert lr_at(30, tc) == 1e-3 and lr_at(65, tc) == pytest.approx(5.5e-4)                 # halfway down
    assert lr_at(100, tc) == pytest.approx(1e-4) and lr_at(10_000, tc) == pytest.approx(1e-4)
    cos = dataclasses.replace(tc, lr_schedule="cosine")
    assert lr_at(65, cos) == pytest.approx(5.5e-4) and lr_at(100, cos) == pytest.approx(1e-4)
    assert lr_at(40, cos) > lr_at(40, tc)                                                   # cosine starts slower
    with pytest.raises(VQBenchError, match=r"^--set min_lr=0.01: min_lr must be at most lr"):
        apply_overrides(OptimizerConfig(), {"min_lr": "0.01"})


def test_default_schedule_is_unchanged():
    """No hold, no floor: the cosine of before, bit for bit (resumed runs keep their LR)."""
    tc = OptimizerConfig(steps=50, lr=3e-4, warmup_steps=5)
    for step in range(60):
        if step < 5:
            old = tc.lr * (step + 1) / 5
        else:
            old = tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - 5) / 45)))
        assert lr_at(step, tc) == old


def test_norms_and_biases_can_be_left_out_of_weight_decay():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(3, 4))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tc = OptimizerConfig(weight_decay=0.5, lr=0.1, decay_norms_and_biases=False)
    opt = adamw(model, tc)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    assert [p.ndim for p in opt.param_groups[1]["params"]] == [1, 1, 1]       # linear bias, norm gain and bias
    for p in model.parameters():
        p.grad = torch.zeros_like(p)                         # only weight decay moves the weights
    opt.step()
    after = model.state_dict()
    for k in before:
        decayed = before[k].dim() >= 2
        assert torch.equal(after[k], before[k]) != decayed, k
    assert len(adamw(model, OptimizerConfig(weight_decay=0.5)).param_groups) == 1
    assert type(adamw(model, OptimizerConfig(optimizer="adam"))) is torch.optim.Adam


def test_a_global_batch_is_split_over_the_processes():
    tc = OptimizerConfig(global_batch_size=256)
    assert per_process_batch(tc, 8) == 32 and per_process_batch(tc, 1) == 256
    assert per_process_batch(OptimizerConfig(batch_size=8), 4) == 8
    with pytest.raises(VQBenchError, match=r"^--set global_batch_size=256: not divisible by the 3 processes"):
        per_process_batch(tc, 3)


def test_flips_are_a_function_of_seed_and_step_and_of_the_global_batch():
    one = BatchOrder(100, 8, 7, Dist(0, 1, 0, torch.device("cpu")))
    again = BatchOrder(100, 8, 7, Dist(0, 1, 0, torch.device("cpu")))
    assert all(torch.equal(one.flips(s), again.flips(s)) for s in range(20))
    draws = torch.stack([one.flips(s) for s in range(200)])
    assert 0.4 < draws.float().mean() < 0.6
    assert len({tuple(d.tolist()) for d in draws}) > 100          # ~139 of the 256 patterns expected
    assert not torch.equal(one.flips(3), BatchOrder(100, 8, 8, Dist(0, 1, 0, torch.device("cpu"))).flips(3))
    halves = [BatchOrder(100, 4, 7, Dist(r, 2, r, torch.device("cpu"))).flips(5) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), one.flips(5))       # two processes flip the same global batch
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float).view(2, 1, 2, 3)
    y = mirror(x, torch.tensor([True, False]))
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])


RECIPE_RUN = ["perceptual_weight=0", "batch_size=8", "disc_layers=1", "disc_channels=8", "disc_start=1",
              "ckpt_every=3", "steps=6", "hflip=true", "lr_schedule=linear", "min_lr=1e-5", "warmup_steps=1",
              "lr_hold_steps=1", "weight_decay=0.05", "decay_norms_and_biases=false", "optimizer=adam"]


def test_recipe_options_train_and_resume_bit_identically(tmp_path):
    """Flips, the linear schedule with its hold and floor, Adam and the no-decay groups: rolling the run
    back to its step-3 checkpoint and resuming reproduces step 6 exactly; flips change the weights."""
    full = tmp_path / "full"
    train_tokenizer("vq-tiny", full, overrides=RECIPE_RUN, dataset="procedural", progress=False)
    final = full / "checkpoints" / "step_00000006"
    expected = load_file(final / "weights.safetensors") | load_file(final / "optimizer.safetensors")
    rolled = tmp_path / "rolled"
    shutil.copytree(full, rolled)
    shutil.rmtree(rolled / "checkpoints" / "step_00000006")
    (rolled / "checkpoints" / "latest").write_text("step_00000003\n")
    train_tokenizer("vq-tiny", rolled, overrides=RECIPE_RUN, dataset="procedural", resume=True, progress=False)
    final = rolled / "checkpoints" / "step_00000006"
    again = load_file(final / "weights.safetensors") | load_file(final / "optimizer.safetensors")
    assert expected.keys() == again.keys() and all(torch.equal(expected[k], again[k]) for k in expected)
    unflipped = tmp_path / "unflipped"
    train_tokenizer("vq-tiny", unflipped, overrides=RECIPE_RUN + ["hflip=false"], dataset="procedural",
                    progress=False)
    other = load_file(unflipped / "checkpoints" / "step_00000006" / "weights.safetensors")
    assert any(not torch.equal(other[k], expected[k]) for k in other)


def test_a_tokenizer_presets_recipe_reaches_its_run_and_the_users_set_wins(tmp_path):
    run = tmp_path / "run"
    train_tokenizer("cvq-maskgen-tiny", run, overrides=["perceptual_weight=0", "batch_size=4", "steps=1",
                                                        "disc_channels=4"], dataset="procedural", progress=False)
    state = json.loads((run / "checkpoints" / "step_00000001" / "state.json").read_text())
    assert state["train_config"]["disc_arch"] == "stylegan" and state["train_config"]["disc_channels"] == 4


def test_a_generator_presets_recipe_reaches_its_run(tmp_path, monkeypatch):
    tok = tmp_path / "tok"
    train_tokenizer("vq-tiny", tok, overrides=["steps=1", "batch_size=8", "perceptual_weight=0", "disc_weight=0"],
                    dataset="procedural", progress=False)
    entry = GENERATORS.entry("ar-tiny")
    recipe = Recipe.of(("lr_schedule", "linear", "test"), ("global_batch_size", "16", "test"),
                       ("decay_norms_and_biases", "false", assumed("test")), ("steps", "2", "test"))
    monkeypatch.setitem(GENERATORS._entries, "ar-tiny",
                        Entry(entry.name, entry.obj, dataclasses.replace(entry.meta, recipe=recipe)))
    run = train_generator("ar-tiny", tok, tmp_path / "gen", overrides=["steps=1"], progress=False)
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 1                                                  # --set steps won
    assert {k: state["train_config"][k] for k in ("lr_schedule", "global_batch_size", "decay_norms_and_biases")} \
        == {"lr_schedule": "linear", "global_batch_size": 16, "decay_norms_and_biases": False}
