"""Load a run's checkpoint as a model: the one loader training and evaluation both use.

A checkpoint records its preset and configuration (``state.json``); the model is rebuilt from them and
its weights (the EMA copy when there is one) are loaded into it.
"""
from __future__ import annotations

import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import NamedTuple

import torch

from harness.core import checkpoint as ckpt
from harness.core.contracts import Conditioning, Generator, Tokenizer
from harness.core.errors import VQBenchError
from harness.models.catalog import build_generator, build_tokenizer, load_all, tokenizer_config
from harness.models.factor_positions import generator_view


def state_part(weights: dict, prefix: str) -> dict:
    """The entries of a checkpoint's flat state dict under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in weights.items() if k.startswith(p)}


def check_finite(path: Path, weights: dict[str, torch.Tensor], prefix: str) -> None:
    """Refuse a checkpoint whose ``prefix``-ed weights (those about to be loaded) hold a NaN or infinity:
    every metric of such a model is meaningless. (Training stops before writing one; this catches
    checkpoints written by older versions or edited since.)"""
    named = [(k, v) for k, v in weights.items()
             if k.startswith(prefix) and v.is_floating_point() and v.numel() > 0]
    if not named:
        return
    norms = torch._foreach_norm([v for _, v in named], float("inf"))     # max |x|: NaN propagates
    finite = torch.isfinite(torch.stack([n.float() for n in norms]))
    if not bool(finite.all()):
        first = named[int((~finite).nonzero()[0, 0])][0]
        raise VQBenchError(f"checkpoint {path} has non-finite weights (first: {first}); it cannot be "
                           "evaluated; resume from an earlier checkpoint")


def load_tokenizer(checkpoint: str | Path, device: torch.device | str = "cpu",
                   use_ema: bool = True) -> tuple[Tokenizer, dict, Path]:
    """Rebuild the tokenizer a checkpoint was trained as and load its (EMA) weights."""
    path = ckpt.resolve(checkpoint)
    weights, _, state = ckpt.load(path)
    if state.get("kind") != "tokenizer":
        raise VQBenchError(f"checkpoint {path} is not a tokenizer checkpoint (kind={state.get('kind')!r})")
    load_all()
    overrides = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v)
                 for k, v in state["model_config"].items()}
    # a field the checkpoint's config lacks did not exist when it was written: it behaved as the field's
    # default (new fields default to the old behaviour), not as the preset sets it today (e.g. the LlamaGen
    # presets' right-bottom padding, the Fashion-MNIST VCQ presets' conv stem)
    for f in fields(tokenizer_config(state["preset"])):
        if f.name not in overrides and f.default is not MISSING:
            overrides[f.name] = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else str(f.default)
    _, model = build_tokenizer(state["preset"], overrides)
    prefix = "ema." if use_ema and any(k.startswith("ema.") for k in weights) else "model."
    check_finite(path, weights, prefix)
    sd = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise VQBenchError(f"checkpoint {path} does not match preset {state['preset']!r} as configured "
                           f"({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), state, path


def load_generator(checkpoint: str | Path, tokenizer, device: torch.device | str = "cpu",
                   use_ema: bool = True) -> tuple[Generator, dict, Path]:
    """Rebuild the generator a checkpoint was trained as (on ``tokenizer``'s layout) and load its weights."""
    path = ckpt.resolve(checkpoint)
    weights, _, state = ckpt.load(path)
    if state.get("kind") != "generator":
        raise VQBenchError(f"checkpoint {path} is not a generator checkpoint (kind={state.get('kind')!r})")
    overrides = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v)
                 for k, v in state["model_config"].items()}
    _, model = build_generator(state["preset"], overrides, tokenizer, run_conditioning(state))
    prefix = "ema." if use_ema and any(k.startswith("ema.") for k in weights) else "model."
    check_finite(path, weights, prefix)
    try:
        model.load_state_dict(state_part(weights, prefix[:-1]))
    except RuntimeError as e:
        raise VQBenchError(f"checkpoint {path} does not match generator {state['preset']!r} on this "
                           f"tokenizer ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), state, path


def run_conditioning(state: dict) -> Conditioning:
    """The condition a generator run was trained on (runs written before text conditioning: class)."""
    record = dict(state.get("conditioning") or {"kind": "class", "num_classes": state["num_classes"]})
    return Conditioning(**{k: v for k, v in record.items() if k not in ("text_encoder", "text_tokens")})


class TextCondition(NamedTuple):
    """How a text-conditioned run embeds a text: its encoder, and the number of per-token states it
    takes (0: one pooled embedding)."""
    encoder: str
    tokens: int


def run_text_condition(state: dict) -> TextCondition | None:
    """The ``TextCondition`` a generator run was trained with; None for class- or unconditional runs."""
    record = state.get("conditioning") or {}
    if record.get("kind") != "text":
        return None
    return TextCondition(record["text_encoder"], int(record.get("text_tokens", 0)))


def tokenizer_checkpoint_of(state: dict, generator_checkpoint: Path) -> Path:
    """The tokenizer checkpoint a generator trained on. Its path was recorded as given, so a relative one
    is relative to the folder training ran from; tried in order: the path as recorded, the path relative
    to the generator's run folder (``tokenizer_from_run``, recorded since), and a sibling run folder of
    the recorded name (suite folders: ``runs/<tokenizer>/checkpoints/step_...``), so a results folder
    stays usable from another working directory or after it is moved."""
    data = state["data"]
    recorded = Path(data["tokenizer"])
    run_dir = Path(generator_checkpoint).parent.parent            # <run>/checkpoints/step_XXXXXXXX
    candidates = [recorded]
    if data.get("tokenizer_from_run"):
        candidates.append(Path(os.path.normpath(run_dir / data["tokenizer_from_run"])))
    if not recorded.is_absolute() and len(recorded.parts) >= 3 and recorded.parts[-2] == "checkpoints":
        candidates.append(run_dir.parent / Path(*recorded.parts[-3:]))
    for candidate in candidates:
        if (candidate / "state.json").is_file():
            return candidate
    raise VQBenchError(f"generator checkpoint {generator_checkpoint}: its tokenizer checkpoint {recorded} is not "
                       f"there (tried {', '.join(map(str, candidates))}); run from the folder it was trained from, "
                       "or keep the tokenizer's run folder beside the generator's")


def load_pair(checkpoint, device):
    """(generator, its state, tokenizer, tokenizer state, tokenizer checkpoint) of a generator checkpoint; the
    tokenizer as the generator saw it (``factors=as-positions``: harness.models.factor_positions)."""
    path = ckpt.resolve(checkpoint)
    state = ckpt.load_state(path)
    if state.get("kind") != "generator":
        raise VQBenchError(f"{checkpoint} is not a generator checkpoint (kind={state.get('kind')!r})")
    tokenizer, tok_state, tok_path = load_tokenizer(tokenizer_checkpoint_of(state, path), device)
    tokenizer = generator_view(tokenizer, state["train_config"].get("factors", "native"))
    generator, state, _ = load_generator(checkpoint, tokenizer, device)
    return generator, state, tokenizer, tok_state, tok_path
