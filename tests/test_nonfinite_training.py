"""Training never writes a non-finite checkpoint, evaluation refuses one, and every training setting
is checked where it enters (issue #13).

The guard (``harness.training.runtime.FiniteGuard``) checks the loss, the unscaled gradients and the
weights after each optimizer step, and everything a checkpoint holds before it is written. Each fault
below is injected after the step-2 checkpoint of a tiny run: the run must stop with one VQBenchError
naming the step and the culprit, and the checkpoint it names must be on disk, finite and loadable.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from harness.core import checkpoint as ckpt
from harness.core.config import apply_overrides
from harness.core.errors import VQBenchError
from harness.core.registry import TOKENIZERS
from harness.models.catalog import tokenizer_config
from harness.models.checkpoints import load_generator, load_tokenizer
from harness.training import losses
from harness.training import train_generator as gen_module
from harness.training import train_tokenizer as tok_module
from harness.training.train_generator import GeneratorTrainConfig, train_generator
from harness.training.train_tokenizer import TrainConfig, train_tokenizer
from tokenizer_helpers import TINY_VQ_SETTINGS, train_tiny_vq

# vq-tiny in seconds, the GAN active from step 1: checkpoints after steps 2 and 4 (0-based steps 1, 3)
TINY = [s for s in TINY_VQ_SETTINGS if not s.startswith(("steps=", "ckpt_every="))] + ["steps=6", "ckpt_every=2"]
GEN = ["steps=6", "batch_size=8", "ckpt_every=2", "ema_decay=0.9"]


class InfGradient(torch.autograd.Function):
    """The identity forward; backward hands back +inf everywhere (a finite loss, overflowing gradients)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.inf)


def _after_calls(n: int):
    """A predicate true from call number ``n + 1`` on."""
    count = {"n": 0}

    def due() -> bool:
        count["n"] += 1
        return count["n"] > n
    return due


def _latest(run) -> str:
    return (run / "checkpoints" / "latest").read_text().strip()


def _assert_finite_checkpoint(folder) -> None:
    """Every tensor of the checkpoint (weights, EMA, optimizer moments) is finite."""
    for name in ("weights.safetensors", "optimizer.safetensors"):
        for k, v in load_file(folder / name).items():
            assert not v.is_floating_point() or torch.isfinite(v).all(), f"{folder.name}/{name}: {k}"


def _assert_stopped_with_a_good_checkpoint(run, error: VQBenchError, last: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert _latest(run) == last and f"the last good checkpoint is {run / 'checkpoints' / last}" in message
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [last]   # the bad step wrote nothing
    _assert_finite_checkpoint(run / "checkpoints" / last)


def _first_parameter(preset: str) -> str:
    return next(name for name, _ in tokenizer_config(preset).build().named_parameters())


# ------------------------------------------------------------------------------ tokenizer training
@pytest.mark.parametrize("target,prefix", [("pixel_loss", "model."), ("discriminator_loss", "disc.")])
def test_overflowing_gradients_with_a_finite_loss_stop_the_run(tmp_path, monkeypatch, target, prefix):
    """The tokenizer's (pixel loss) or the discriminator's (its loss) gradients overflow at 0-based step
    2 while every loss stays finite: the loss check alone would let the run write NaN weights."""
    original, due = getattr(losses, target), _after_calls(2 if target == "pixel_loss" else 1)

    def overflowing(kind, a, b):
        return original(kind, InfGradient.apply(a) if due() else a, b)
    monkeypatch.setattr(losses, target, overflowing)
    seen = []
    real_generator_loss = losses.VQLoss.generator_loss

    def record(self, *args):
        total, logs = real_generator_loss(self, *args)
        seen.append(float(total.detach()))
        return total, logs
    monkeypatch.setattr(losses.VQLoss, "generator_loss", record)

    # the GAN off in the tokenizer's case: its adaptive weight (a ratio of gradient norms) would turn
    # the overflow into a NaN loss, which the loss check already catches
    settings = TINY + (["disc_start=100"] if target == "pixel_loss" else [])
    with pytest.raises(VQBenchError, match=rf"non-finite gradient of {prefix}\S+ at step 2\b") as e:
        train_tokenizer("vq-tiny", tmp_path, overrides=settings, dataset="procedural", progress=False)
    assert len(seen) == 3 and all(math.isfinite(v) for v in seen)          # the losses were finite
    if prefix == "model.":       # the first parameter in the module's order is the one named
        assert f"gradient of model.{_first_parameter('vq-tiny')} " in str(e.value)
    _assert_stopped_with_a_good_checkpoint(tmp_path, e.value, "step_00000002")
    load_tokenizer(tmp_path)                                                 # evaluable


def test_nan_weight_after_the_optimizer_step_stops_the_run(tmp_path, monkeypatch):
    """The tokenizer's optimizer writes a NaN into its last parameter at 0-based step 2 (finite loss,
    finite gradients): the weight check names that parameter."""
    real_adamw, made = tok_module.adamw, []

    def adamw(params, tc):
        opt = real_adamw(params, tc)
        made.append(opt)
        if len(made) == 1:                   # the tokenizer's optimizer (the discriminator's comes second)
            real_step, due = opt.step, _after_calls(2)

            def step(*a, **k):
                out = real_step(*a, **k)
                if due():
                    with torch.no_grad():
                        opt.param_groups[0]["params"][-1].view(-1)[0] = math.nan
                return out
            opt.step = step
        return opt
    monkeypatch.setattr(tok_module, "adamw", adamw)
    last = list(dict(tokenizer_config("vq-tiny").build().named_parameters()))[-1]
    with pytest.raises(VQBenchError, match=rf"non-finite weight model\.{last} at step 2 after the optimizer step"
                       ) as e:
        train_tokenizer("vq-tiny", tmp_path, overrides=TINY, dataset="procedural", progress=False)
    _assert_stopped_with_a_good_checkpoint(tmp_path, e.value, "step_00000002")


def test_nan_optimizer_moment_is_caught_before_the_checkpoint_is_written(tmp_path, monkeypatch):
    """A NaN that reaches only what the checkpoint alone reads (an Adam moment, at the last step before a
    checkpoint; the weights stay finite): the pre-save check refuses to write it."""
    real_adamw, made = tok_module.adamw, []

    def adamw(params, tc):
        opt = real_adamw(params, tc)
        made.append(opt)
        if len(made) == 1:
            real_step, due = opt.step, _after_calls(3)

            def step(*a, **k):
                out = real_step(*a, **k)
                if due():
                    opt.state[opt.param_groups[0]["params"][0]]["exp_avg_sq"].view(-1)[0] = math.nan
                return out
            opt.step = step
        return opt
    monkeypatch.setattr(tok_module, "adamw", adamw)
    with pytest.raises(VQBenchError, match=r"non-finite optimizer state g: exp_avg_sq of model\.\S+ at step 3 "
                                           r"\(before writing its checkpoint\)") as e:
        train_tokenizer("vq-tiny", tmp_path, overrides=TINY, dataset="procedural", progress=False)
    _assert_stopped_with_a_good_checkpoint(tmp_path, e.value, "step_00000002")


def test_nan_loss_still_names_the_loss_terms(tmp_path, monkeypatch):
    from tokenizer_helpers import poison_forward_after
    poison_forward_after(monkeypatch, "vq-tiny", calls=2)
    with pytest.raises(VQBenchError, match=r"non-finite training loss at step 2 \(pixel=nan.*\); the last good "
                                           r"checkpoint is .*step_00000002") as e:
        train_tokenizer("vq-tiny", tmp_path, overrides=TINY, dataset="procedural", progress=False)
    _assert_stopped_with_a_good_checkpoint(tmp_path, e.value, "step_00000002")


def test_a_fault_before_the_first_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    original, due = losses.pixel_loss, _after_calls(0)
    monkeypatch.setattr(losses, "pixel_loss",
                        lambda kind, a, b: original(kind, InfGradient.apply(a) if due() else a, b))
    with pytest.raises(VQBenchError, match=r"gradient of model\.\S+ at step 0; no checkpoint was written yet"):
        train_tokenizer("vq-tiny", tmp_path, overrides=TINY, dataset="procedural", progress=False)
    assert not (tmp_path / "checkpoints" / "latest").exists()


# ------------------------------------------------------------------------------ generator training
@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tok")
    train_tiny_vq(run)
    return run


def test_generator_overflowing_gradients_stop_the_run(tokenizer_run, tmp_path, monkeypatch):
    """A hook makes the generator's first parameter's gradient infinite from 0-based step 2 on."""
    real_adamw = gen_module.adamw

    def adamw(params, tc):           # the loop passes the module (its parameters grouped for weight decay)
        params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
        due = _after_calls(2)
        params[0].register_hook(lambda g: g * math.inf if due() else g)
        return real_adamw(params, tc)
    monkeypatch.setattr(gen_module, "adamw", adamw)
    run = tmp_path / "ar"
    with pytest.raises(VQBenchError, match=r"non-finite gradient of model\.\S+ at step 2\b") as e:
        train_generator("ar-tiny", tokenizer_run, run, overrides=GEN, progress=False)
    _assert_stopped_with_a_good_checkpoint(run, e.value, "step_00000002")
    generator, _, _ = load_generator(run, load_tokenizer(tokenizer_run)[0])
    assert all(torch.isfinite(p).all() for p in generator.parameters())


def test_generator_nan_weight_stops_the_run(tokenizer_run, tmp_path, monkeypatch):
    real_adamw = gen_module.adamw

    def adamw(params, tc):
        opt = real_adamw(params, tc)
        real_step, due = opt.step, _after_calls(2)

        def step(*a, **k):
            out = real_step(*a, **k)
            if due():
                with torch.no_grad():
                    opt.param_groups[0]["params"][1].view(-1)[0] = math.inf
            return out
        opt.step = step
        return opt
    monkeypatch.setattr(gen_module, "adamw", adamw)
    run = tmp_path / "ar"
    with pytest.raises(VQBenchError, match=r"non-finite weight model\.\S+ at step 2 after the optimizer step") as e:
        train_generator("ar-tiny", tokenizer_run, run, overrides=GEN, progress=False)
    _assert_stopped_with_a_good_checkpoint(run, e.value, "step_00000002")


# ------------------------------------------------------------------------------ evaluation refuses NaN
def _copy_with_nan(src_ckpt, root, key_prefix: str):
    """A copy of checkpoint ``src_ckpt`` under ``root`` (written by harness.core.checkpoint.save) whose
    first weight under ``key_prefix`` holds one NaN; returns (checkpoint folder, that weight's name)."""
    weights, optim, state = ckpt.load(src_ckpt)
    name = next(k for k, v in weights.items() if k.startswith(key_prefix) and v.is_floating_point())
    weights[name] = weights[name].clone()
    weights[name].view(-1)[-1] = math.nan
    state = {k: v for k, v in state.items() if k != "files"}
    return ckpt.save(root / "checkpoints", state["step"], weights, optim, state), name


def test_evaluation_refuses_a_tokenizer_checkpoint_with_nan_weights(tokenizer_run, tmp_path):
    bad, name = _copy_with_nan(ckpt.resolve(tokenizer_run), tmp_path / "bad", "model.")
    with pytest.raises(VQBenchError, match=rf"checkpoint {bad} has non-finite weights \(first: {name}\); it "
                                           r"cannot be evaluated"):
        load_tokenizer(bad)
    from bad_input_cases import run_main        # the CLI: one line, exit 2
    rc, _, err = run_main(["eval", tmp_path / "bad", "--results", tmp_path / "r.jsonl", "--n-eval", "8", "--quiet"])
    assert rc == 2 and err.strip().count("\n") == 0 and "non-finite weights" in err, err
    # a NaN only in the weights evaluation does not read (the discriminator) is not a reason to refuse
    other, _ = _copy_with_nan(ckpt.resolve(tokenizer_run), tmp_path / "disc", "disc.")
    load_tokenizer(other)


def test_evaluation_refuses_a_generator_checkpoint_with_nan_weights(tokenizer_run, tmp_path):
    run = tmp_path / "ar"
    train_generator("ar-tiny", tokenizer_run, run, overrides=["steps=2", "batch_size=8", "ckpt_every=2",
                                                              "ema_decay=0.9"], progress=False)
    tokenizer = load_tokenizer(tokenizer_run)[0]
    bad, name = _copy_with_nan(ckpt.resolve(run), tmp_path / "bad", "ema.")      # the EMA is what loads
    with pytest.raises(VQBenchError, match=rf"non-finite weights \(first: {name}\)"):
        load_generator(bad, tokenizer)
    load_generator(bad, tokenizer, use_ema=False)     # the raw weights are finite


# ------------------------------------------------------------------------------ resume past the end
def test_resume_beyond_the_configured_steps_is_refused_and_a_finished_run_is_returned(tokenizer_run, tmp_path):
    settings = list(TINY_VQ_SETTINGS)
    done = tmp_path / "done"
    shutil.copytree(tokenizer_run, done)
    final = train_tokenizer("vq-tiny", done, overrides=settings, dataset="procedural", resume=True, progress=False)
    assert final == done / "checkpoints" / "step_00000002"           # start == steps: nothing to train

    # a hand-edited step count past steps=2 (folder, pointer and state.json agree, so it loads)
    edited = tmp_path / "edited"
    shutil.copytree(tokenizer_run, edited)
    folder = edited / "checkpoints" / "step_00000009"
    (edited / "checkpoints" / "step_00000002").rename(folder)
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps(state | {"step": 9}))
    (edited / "checkpoints" / "latest").write_text("step_00000009\n")
    with pytest.raises(VQBenchError, match=rf"checkpoint {folder} is at step 9, beyond --set steps=2"):
        train_tokenizer("vq-tiny", edited, overrides=settings, dataset="procedural", resume=True, progress=False)


# ------------------------------------------------------------------------------ settings' domains
BAD_SETTINGS = [("steps", "0"), ("steps", "-3"), ("batch_size", "0"), ("lr", "nan"), ("lr", "inf"), ("lr", "-1"),
                ("lr", "0"), ("weight_decay", "-0.1"), ("beta1", "1"), ("beta2", "-0.5"), ("warmup_steps", "-1"),
                ("grad_clip", "nan"), ("grad_clip", "-1"), ("ema_decay", "1.5"), ("ema_decay", "1"),
                ("ckpt_every", "0"), ("ckpt_every", "-1"), ("log_every", "0"), ("seed", "-1"),
                ("pixel_weight", "inf"), ("perceptual_weight", "-1"), ("disc_weight", "nan"), ("disc_start", "-2"),
                ("disc_layers", "0"), ("disc_channels", "0"), ("lecam_weight", "-1"), ("lecam_decay", "1")]


@pytest.mark.parametrize("key,raw", BAD_SETTINGS, ids=[f"{k}={v}" for k, v in BAD_SETTINGS])
def test_tokenizer_training_settings_outside_their_domain_are_refused(key, raw):
    with pytest.raises(VQBenchError, match=rf"^--set {key}={raw}\S*: "):
        apply_overrides(TrainConfig(), {key: raw})


@pytest.mark.parametrize("key,raw", [("steps", "0"), ("batch_size", "-8"), ("lr", "nan"), ("stage1_steps", "-1"),
                                     ("ckpt_every", "0")])
def test_generator_training_settings_outside_their_domain_are_refused(key, raw):
    with pytest.raises(VQBenchError, match=rf"^--set {key}={raw}\S*: "):
        apply_overrides(GeneratorTrainConfig(), {key: raw})


def test_defaults_and_every_presets_recipe_are_valid():
    TrainConfig(), GeneratorTrainConfig()
    for name in TOKENIZERS.names():
        defaults = dict(s.split("=", 1) for s in TOKENIZERS.entry(name).meta.recipe.overrides())
        apply_overrides(TrainConfig(), {k: v for k, v in defaults.items() if k in TrainConfig.__dataclass_fields__})
    # the edges of each domain are accepted
    apply_overrides(TrainConfig(), {"steps": "1", "lr": "1e-9", "grad_clip": "0", "ema_decay": "0", "seed": "0",
                                    "disc_weight": "0", "perceptual_weight": "0", "warmup_steps": "0",
                                    "lecam_decay": "0.999999", "beta2": "0"})
    assert dataclasses.replace(GeneratorTrainConfig(), stage1_steps=0).stage1_steps == 0


@pytest.mark.parametrize("n", [0, -5])
def test_n_train_must_be_positive(tmp_path, n):
    with pytest.raises(VQBenchError, match=rf"--n-train {n}: "):
        train_tokenizer("vq-tiny", tmp_path / "run", overrides=TINY, dataset="procedural", n_train=n, progress=False)
    assert not (tmp_path / "run").exists()          # refused before the run folder is made


# ------------------------------------------------------------------------------ every tiny preset trains
TINY_PRESETS = sorted(n for n in TOKENIZERS.names() if n.endswith("-tiny"))


def _train_two_steps(preset, run, monkeypatch, settings) -> None:
    """Two steps of ``preset`` with ``settings``; both losses of both steps are recorded and finite."""
    totals = {"g": [], "d": []}
    real_g, real_d = losses.VQLoss.generator_loss, losses.VQLoss.discriminator_loss

    def g(self, *a):
        total, logs = real_g(self, *a)
        totals["g"].append(float(total.detach()))
        return total, logs

    def d(self, *a):
        total, logs = real_d(self, *a)
        totals["d"].append(float(total.detach()))
        return total, logs
    monkeypatch.setattr(losses.VQLoss, "generator_loss", g)
    monkeypatch.setattr(losses.VQLoss, "discriminator_loss", d)
    final = train_tokenizer(preset, run, overrides=["steps=2", "ckpt_every=2", "disc_start=0", *settings],
                            dataset="procedural", progress=False)
    assert len(totals["g"]) == len(totals["d"]) == 2
    assert all(math.isfinite(v) for v in totals["g"] + totals["d"]), totals
    assert any(k.startswith("disc.") for k in load_file(final / "weights.safetensors"))
    _assert_finite_checkpoint(final)


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_preset_trains_at_its_default_settings(preset, tmp_path, monkeypatch):
    """Two steps at the preset's default training settings (batch 32, its discriminator at the default
    depth and width) with the GAN active from step 0. LPIPS is off here: its VGG on 16 px images
    upsampled costs seconds a step on a CPU (the slow variant below keeps it)."""
    _train_two_steps(preset, tmp_path, monkeypatch, ["perceptual_weight=0"])


@pytest.mark.slow
@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_preset_trains_at_its_default_settings_with_lpips(preset, tmp_path, monkeypatch):
    _train_two_steps(preset, tmp_path, monkeypatch, [])


@pytest.mark.parametrize("resolution", [4, 5, 7, 8, 12, 16, 28, 32, 64])
@pytest.mark.parametrize("layers", [1, 2, 3, 5])
def test_patchgan_depth_fits_the_resolution(resolution, layers):
    from harness.models.discriminators import build_discriminator, patchgan_output_side
    disc = build_discriminator("patchgan", 1, resolution, 4, layers)
    logits = disc(torch.randn(2, 1, resolution, resolution))
    assert logits.shape[-1] == patchgan_output_side(resolution, disc.n_layers) >= 1
    assert disc.n_layers == layers or patchgan_output_side(resolution, disc.n_layers + 1) < 1   # the deepest that fits
    stylegan = build_discriminator("stylegan", 1, resolution, 4, layers)
    assert stylegan(torch.randn(2, 1, resolution, resolution)).shape == (2, 1)


def test_patchgan_keeps_its_depth_where_it_fits_and_refuses_tiny_images():
    from harness.models.discriminators import PatchGAN, build_discriminator
    assert build_discriminator("patchgan", 3, 256, 8, 3).n_layers == 3            # VQGAN's: a 30x30 map
    assert build_discriminator("patchgan", 3, 256, 8, 3)(torch.randn(1, 3, 256, 256)).shape[-1] == 30
    assert build_discriminator("patchgan", 1, 28, 8, 3).n_layers == 3             # the fmnist presets unchanged
    assert PatchGAN(1, 8, 3).n_layers == 3                                        # no resolution: as asked
    with pytest.raises(VQBenchError, match="disc_arch=patchgan needs images of at least 4x4"):
        build_discriminator("patchgan", 1, 3, 8, 3)


# ------------------------------------------------------------------------------ the guard itself
def _module_with(grad_value: float, weight_value: float = 1.0) -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(weight_value)
            p.grad = torch.full_like(p, grad_value)
    return m


def test_guard_ignores_finite_values_whose_norm_overflows_and_names_the_first_culprit():
    from harness.core.distributed import setup
    from harness.training.runtime import FiniteGuard
    guard = FiniteGuard(setup("cpu"))
    guard.gradients("model", _module_with(1e30))            # finite, but the 2-norm overflows fp32
    guard.weights("model", _module_with(0.0, 3e38))
    guard.check(0, None)                                      # a false alarm, cleared by the exact look
    m = _module_with(1.0)
    m[1].bias.grad[0] = -math.inf
    m[1].weight.grad[0, 0] = math.nan
    guard.gradients("model", _module_with(1e30))
    guard.gradients("model", m)
    with pytest.raises(VQBenchError, match=r"^non-finite gradient of model\.1\.weight at step 7; no checkpoint"):
        guard.check(7, None)
    guard.check(8, None)                                      # a check clears what it looked at


def test_guard_leaves_fp16_gradients_to_the_grad_scaler_but_not_the_weights(tmp_path):
    from harness.core.distributed import setup
    from harness.training.runtime import FiniteGuard
    guard = FiniteGuard(setup("cpu"), "fp16")
    guard.gradients("model", _module_with(math.inf))          # the scaler skips such a step
    guard.check(0, None)
    guard.weights("disc", _module_with(0.0, math.nan))
    with pytest.raises(VQBenchError, match=rf"non-finite weight disc\.0\.weight at step 1 after the optimizer step; "
                                           rf"the last good checkpoint is {tmp_path}"):
        guard.check(1, tmp_path)


DDP_SCRIPT = '''
import math, os, sys
import torch
from harness.core.errors import VQBenchError
from harness.training import train_tokenizer as tok
rank, run, settings = int(os.environ["RANK"]), sys.argv[1], sys.argv[2:]
real_adamw, made = tok.adamw, []

def adamw(params, tc):                       # rank 1's tokenizer weights turn NaN at 0-based step 2
    opt = real_adamw(params, tc)
    made.append(opt)
    if rank == 1 and len(made) == 1:
        real_step, calls = opt.step, [0]
        def step(*a, **k):
            out = real_step(*a, **k)
            calls[0] += 1
            if calls[0] == 3:
                with torch.no_grad():
                    opt.param_groups[0]["params"][0].view(-1)[0] = math.nan
            return out
        opt.step = step
    return opt
tok.adamw = adamw
try:
    tok.train_tokenizer("vq-tiny", run, overrides=settings, dataset="procedural", device="cpu", progress=False)
except VQBenchError as e:
    print(f"rank{rank}: {e}", flush=True)
    sys.exit(3)
print(f"rank{rank}: finished", flush=True)
'''


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_rank_goes_non_finite(tmp_path, cli_env):
    """torchrun, 2 processes (gloo): rank 1 alone gets a NaN weight; both ranks stop at the same step
    (no rank hangs in the next all-reduce), and the checkpoint on disk is the finite one before."""
    import subprocess
    import sys
    from conftest import REPO
    script, run = tmp_path / "ddp_fault.py", tmp_path / "run"
    script.write_text(DDP_SCRIPT)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), str(run), *TINY], cwd=REPO, env=cli_env | {"OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    first = next(n for n, _ in tokenizer_config("vq-tiny").build().named_parameters())
    assert f"rank1: non-finite weight model.{first} at step 2 after the optimizer step" in r.stdout, r.stdout + r.stderr
    assert "rank0: non-finite values on another process at step 2" in r.stdout, r.stdout + r.stderr
    assert _latest(run) == "step_00000002"
    _assert_finite_checkpoint(run / "checkpoints" / "step_00000002")
