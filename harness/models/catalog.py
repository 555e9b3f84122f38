"""Build tokenizers and generators by registered preset name."""
from __future__ import annotations

import warnings

import torch

from harness.core.config import apply_overrides
from harness.core.contracts import Conditioning, Generator, Tokenizer
from harness.core.discovery import load_all  # noqa: F401  (re-exported for the callers that fill registries)
from harness.core.errors import VQBenchError
from harness.core.registry import GENERATORS, TOKENIZERS


def tokenizer_config(preset: str):
    return TOKENIZERS.get(preset)()


# what a constructor raises when a --set value makes a shape impossible (zero heads, a width not
# divisible by the heads, an empty channel list, ...); TypeError and IndexError are left to be bugs
BUILD_ERRORS = (ValueError, RuntimeError, AssertionError, ZeroDivisionError)


def _raw(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _build(preset: str, default_cfg, overrides: dict[str, str] | None, build):
    """``build()``; a failure caused by values set away from the preset's becomes one error line naming
    them (a preset that fails at its own values is a bug and keeps its traceback)."""
    with warnings.catch_warnings(record=True) as caught:   # shown only if the build succeeds
        try:
            model, failure = build(), None
        except BUILD_ERRORS as e:
            model, failure = None, e
    if failure is None:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model
    changed = {k: v for k, v in (overrides or {}).items() if _raw(getattr(default_cfg, k, None)) != v}
    if not changed:
        raise failure
    given = " ".join(f"--set {k}={v}" for k, v in changed.items())
    first = str(failure).strip().splitlines()[0] if str(failure).strip() else failure.__class__.__name__
    raise VQBenchError(f"{preset} cannot be built with {given}: {first}; choose other values "
                       f"(`vqbench train {preset} --help-settings` lists them)") from None


def build_tokenizer(preset: str, overrides: dict[str, str] | None = None,
                    device: str | torch.device | None = None) -> tuple[object, Tokenizer]:
    """(config, model) for a registered preset with ``key -> raw value`` overrides applied.

    ``device="meta"`` builds paper-scale presets without allocating their weights.
    """
    default = tokenizer_config(preset)
    cfg = apply_overrides(default, overrides or {})
    if device is None:
        return cfg, _build(preset, default, overrides, cfg.build)
    with torch.device(device):
        return cfg, _build(preset, default, overrides, cfg.build)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def generator_config(preset: str):
    return GENERATORS.get(preset)()


def build_generator(preset: str, overrides: dict[str, str], tokenizer, conditioning: Conditioning,
                    device: str | torch.device | None = None) -> tuple[object, Generator]:
    """(config, generator) for ``preset`` on ``tokenizer``'s layout, conditioned as ``conditioning`` says.

    A layout kind the preset's family does not declare is rejected by ``Generator.__init__``.
    """
    default = generator_config(preset)
    cfg = apply_overrides(default, overrides)
    layout = tokenizer.layout
    codebook = tokenizer_codebook(tokenizer)
    def build():
        return cfg.build(layout, conditioning, codebook)
    if device is None:
        return cfg, _build(preset, default, overrides, build)
    with torch.device(device):
        return cfg, _build(preset, default, overrides, build)


def generator_params(preset: str, overrides: dict[str, str], tokenizer_preset: str | None) -> int:
    """Parameter count on the meta device: on ``tokenizer_preset``'s layout, else the paper's layout."""
    return parameter_count(generator_on_meta(preset, overrides, tokenizer_preset))


def generator_on_meta(preset: str, overrides: dict[str, str], tokenizer_preset: str | None) -> Generator:
    """``preset`` built on the meta device (no weights allocated): on ``tokenizer_preset``'s layout,
    else the paper's layout."""
    info = GENERATORS.entry(preset).meta
    cfg = apply_overrides(generator_config(preset), overrides)
    if tokenizer_preset is not None:
        _, tok = build_tokenizer(tokenizer_preset, device="meta")
        layout = tok.layout
        conditioning = info.paper_conditioning or Conditioning("class", num_classes=1000)
        codebook_dim = tok.code_embeddings(torch.zeros(1, 1, dtype=torch.long, device="meta")).shape[-1] \
            if layout.num_factors == 1 else None
    elif info.paper_layout is not None:
        layout = info.paper_layout
        conditioning = info.paper_conditioning or Conditioning("class", num_classes=1000)
        codebook_dim = info.paper_codebook_dim
    else:
        raise VQBenchError(f"{preset} has no paper layout: pass --tokenizer TOKENIZER_PRESET to count it on "
                           "that tokenizer's token layout")
    with torch.device("meta"):
        codebook = (torch.zeros(layout.max_codebook_size, codebook_dim) if codebook_dim else None)
        return _build(preset, generator_config(preset), overrides,
                      lambda: cfg.build(layout, conditioning, codebook))


@torch.no_grad()
def tokenizer_codebook(tokenizer) -> torch.Tensor | None:
    """K x D code vectors of a single-factor tokenizer (what CAR embeds its inputs with)."""
    layout = tokenizer.layout
    if layout.num_factors > 1:
        return None
    k = layout.max_codebook_size
    codes = torch.arange(k, device=next(tokenizer.parameters()).device).view(1, k)
    try:
        return tokenizer.code_embeddings(codes)[0].detach().cpu().float()
    except (RuntimeError, IndexError, ValueError):
        return None          # a tokenizer whose code_embeddings needs full-length sequences


def preset_layout(preset: str, overrides: dict[str, str] | None = None):
    """The ``TokenLayout`` of a tokenizer preset with its model ``overrides`` (built on the meta device, or on
    the CPU for a quantizer that reads a tensor's value while it is built, as FSQ's)."""
    try:
        _, model = build_tokenizer(preset, overrides, device="meta")
    except RuntimeError:
        _, model = build_tokenizer(preset, overrides, device="cpu")
    return model.layout


def preset_schedule(preset: str) -> tuple[int, ...] | None:
    """K_t of a tokenizer preset's layout when it varies over positions (VCQ), else None (built on the
    meta device: no weights allocated)."""
    sizes = tuple(int(k) for k in preset_layout(preset).codebook_sizes)
    return sizes if len(set(sizes)) > 1 else None
