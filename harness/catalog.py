"""Fill every registry (built-in modules + plugin folders) and build things by name."""
from __future__ import annotations

import importlib

import torch

from .config import apply_overrides
from .contracts import Tokenizer
from .plugins import load_plugins
from .registry import TOKENIZERS

BUILTIN_MODULES = ("harness.data", "harness.metrics.image", "harness.metrics.tokens", "harness.suites",
                   "harness.teachers", "harness.features", "harness.metrics.fidelity",
                   "harness.metrics.perceptual", "harness.metrics.cliff", "harness.generators.ar", "harness.generators.far",
                   "harness.generators.car", "harness.generators.masked", "harness.text_encoders")
_loaded = False


def load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True          # set first: registry lookups made while loading must not recurse
        try:
            for name in BUILTIN_MODULES:
                importlib.import_module(name)
            load_plugins()
        except BaseException:
            _loaded = False
            raise


def tokenizer_config(preset: str):
    load_all()
    return TOKENIZERS.get(preset)()


def build_tokenizer(preset: str, overrides: dict[str, str] | None = None,
                    device: str | torch.device | None = None) -> tuple[object, Tokenizer]:
    """(config, model) for a registered preset with ``key -> raw value`` overrides applied.

    ``device="meta"`` builds paper-scale presets without allocating their weights.
    """
    cfg = apply_overrides(tokenizer_config(preset), overrides or {})
    if device is None:
        return cfg, cfg.build()
    with torch.device(device):
        return cfg, cfg.build()


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
