"""Training settings outside their domain, given to `vqbench train` (checked where they enter: the
training configs' own checks, the --set parser, the run's checkpoint on --resume).

Each case names the setting in its culprit (``key=value`` as the user typed it, or the option), so
an error that blames something else fails the case.
"""
from __future__ import annotations

import json
import shutil

from bad_input_cases import Case, World

# the template run's settings (tests/tokenizer_helpers.TINY_VQ_SETTINGS): resuming with these is exit 0
TINY_VQ = ("perceptual_weight=0", "batch_size=8", "disc_layers=1", "disc_channels=8", "steps=2", "ckpt_every=2",
           "disc_start=1")


def _sets(settings) -> list:
    return [a for s in settings for a in ("--set", s)]


def _train(*settings, extra=()):
    """A fresh vq-tiny run in a new folder: the template's settings, then ``settings`` (later ones win)."""
    def setup(w: World) -> list:
        return ["train", "vq-tiny", "--run-dir", w.root / "new", "--dataset", "procedural", "--quiet",
                *_sets(TINY_VQ + settings), *extra]
    return setup


def _train_generator(*settings):
    def setup(w: World) -> list:
        return ["train", "ar-tiny", "--tokenizer", w.tokenizer_run, "--run-dir", w.root / "new-gen", "--quiet",
                *_sets(("steps=2", "batch_size=8", "ckpt_every=2") + settings)]
    return setup


def _resume(*settings):
    """Resuming the template run (finished at step 2) with its settings, then ``settings``."""
    def setup(w: World) -> list:
        return ["train", "vq-tiny", "--run-dir", w.tokenizer_run, "--resume", "--dataset", "procedural", "--quiet",
                *_sets(TINY_VQ + settings)]
    return setup


def _resume_past_the_end(w: World) -> list:
    """The template's checkpoint hand-edited to claim step 9 of a steps=2 run (folder, pointer and
    state.json agree, and the tensor files and their checksums are untouched, so it loads)."""
    root = w.tokenizer_run / "checkpoints"
    old = w.tokenizer_ckpt
    new = root / "step_00000009"
    shutil.move(old, new)
    state = json.loads((new / "state.json").read_text())
    (new / "state.json").write_text(json.dumps(state | {"step": 9}))
    (root / "latest").write_text("step_00000009\n")
    return _resume()(w)


CASES = [
    # the optimizer's settings
    Case("steps-zero", _train("steps=0"), "steps=0"),
    Case("steps-negative", _train("steps=-3"), "steps=-3"),
    Case("steps-word", _train("steps=abc"), "steps=abc"),
    Case("steps-fraction", _train("steps=2.5"), "steps=2.5"),
    Case("batch-size-zero", _train("batch_size=0"), "batch_size=0"),
    Case("batch-size-negative", _train("batch_size=-8"), "batch_size=-8"),
    Case("batch-size-above-the-training-set", _train("batch_size=8", extra=("--n-train", "4")), "batch_size"),
    Case("lr-nan", _train("lr=nan"), "lr=nan"),
    Case("lr-inf", _train("lr=inf"), "lr=inf"),
    Case("lr-negative", _train("lr=-1"), "lr=-1"),
    Case("lr-zero", _train("lr=0"), "lr=0"),
    Case("lr-word", _train("lr=fast"), "lr=fast"),
    Case("weight-decay-negative", _train("weight_decay=-0.1"), "weight_decay=-0.1"),
    Case("beta1-one", _train("beta1=1"), "beta1=1"),
    Case("beta2-above-one", _train("beta2=1.5"), "beta2=1.5"),
    Case("warmup-steps-negative", _train("warmup_steps=-1"), "warmup_steps=-1"),
    Case("grad-clip-nan", _train("grad_clip=nan"), "grad_clip=nan"),
    Case("grad-clip-negative", _train("grad_clip=-1"), "grad_clip=-1"),
    Case("ema-decay-above-one", _train("ema_decay=1.5"), "ema_decay=1.5"),
    Case("ema-decay-one", _train("ema_decay=1"), "ema_decay=1"),
    Case("ckpt-every-zero", _train("ckpt_every=0"), "ckpt_every=0"),
    Case("ckpt-every-negative", _train("ckpt_every=-1"), "ckpt_every=-1"),
    Case("log-every-zero", _train("log_every=0"), "log_every=0"),
    Case("seed-negative", _train("seed=-1"), "seed=-1"),
    Case("schedule-unknown", _train("lr_schedule=exponential"), "lr_schedule=exponential"),
    # the loss's settings
    Case("pixel-weight-inf", _train("pixel_weight=inf"), "pixel_weight=inf"),
    Case("perceptual-weight-negative", _train("perceptual_weight=-1"), "perceptual_weight=-1"),
    Case("disc-weight-nan", _train("disc_weight=nan"), "disc_weight=nan"),
    Case("disc-start-negative", _train("disc_start=-2"), "disc_start=-2"),
    Case("disc-layers-zero", _train("disc_layers=0"), "disc_layers=0"),
    Case("disc-channels-zero", _train("disc_channels=0"), "disc_channels=0"),
    Case("lecam-weight-negative", _train("lecam_weight=-0.5"), "lecam_weight=-0.5"),
    Case("lecam-decay-one", _train("lecam_weight=0.001", "lecam_decay=1"), "lecam_decay=1"),
    Case("adaptive-weight-not-a-boolean", _train("adaptive_disc_weight=maybe"), "adaptive_disc_weight=maybe"),
    Case("disc-arch-unknown", _train("disc_arch=unet"), "disc_arch=unet"),
    # precision, unknown names, malformed items
    Case("precision-fp16-on-cpu", _train("precision=fp16", extra=("--device", "cpu")), "precision=fp16"),
    Case("precision-unknown", _train("precision=fp64"), "precision=fp64"),
    Case("setting-unknown", _train("stpes=3"), "stpes"),
    Case("setting-without-value", _train("steps"), "steps"),
    # how many images
    Case("n-train-zero", _train(extra=("--n-train", "0")), "--n-train"),
    Case("n-train-negative", _train(extra=("--n-train", "-5")), "--n-train"),
    # generator training
    Case("generator-steps-zero", _train_generator("steps=0"), "steps=0"),
    Case("generator-lr-nan", _train_generator("lr=nan"), "lr=nan"),
    Case("generator-stage1-steps-negative", _train_generator("stage1_steps=-1"), "stage1_steps=-1"),
    Case("generator-precision-fp16", _train_generator("precision=fp16"), "precision=fp16"),
    # resuming
    Case("resume-with-another-setting", _resume("lr=0.001"), "lr="),
    Case("resume-with-a-bad-setting", _resume("steps=0"), "steps=0"),
    Case("resume-past-the-configured-steps", _resume_past_the_end, "steps=2"),
]
