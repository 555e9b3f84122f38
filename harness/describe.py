"""`vqbench describe PRESET`: what a tokenizer or generator preset is and how its paper trains it.

Printed: the architecture (the preset's config fields), the parameter count (paper presets built on the
meta device, without memory), the token layout (positions, codebook size(s), sub-codes per position,
position kind), bits per image (the sum over positions of log2 K_t, times the sub-codes per position)
and the training recipe, one value per line with its source; a value the paper does not state is
marked ``[assumed]`` with where it comes from instead (harness.core.recipes). A generator is described
on its paper layout, on ``tokenizer``'s, or (tiny and small presets) on the first tokenizer preset of
its scale whose layout kind its family supports.
"""
from __future__ import annotations

import dataclasses

from harness.core.config import to_dict
from harness.core.contracts import TokenLayout
from harness.core.errors import VQBenchError
from harness.core.registry import TOKENIZERS, check_generator_layout, preset_entry
from harness.models.catalog import (BUILD_ERRORS, build_tokenizer, generator_config, generator_on_meta,
                                    parameter_count, tokenizer_config)


def describe(preset: str, tokenizer: str | None = None) -> str:
    registry, entry = preset_entry(preset)
    meta = entry.meta
    lines = [f"{preset}: {registry.kind} preset, family {meta.family}, scale {meta.scale}",
             f"  {meta.description}"]
    if registry is TOKENIZERS:
        if tokenizer is not None:
            raise VQBenchError(f"--tokenizer is for generator presets; {preset} is a tokenizer")
        cfg = tokenizer_config(preset)
        # paper presets on the meta device; small ones for real (some libraries read values at init)
        _, model = build_tokenizer(preset, device="meta" if meta.scale == "paper" else "cpu")
        layout, resolution, on = model.layout, cfg.resolution, None
    else:
        cfg = generator_config(preset)
        tokenizer = tokenizer or (None if meta.paper_layout is not None else _default_tokenizer(meta))
        model = generator_on_meta(preset, {}, tokenizer)
        layout = model.layout
        resolution = tokenizer_config(tokenizer).resolution if tokenizer else None
        on = f"{tokenizer}'s layout" if tokenizer else "the paper's layout"
    lines += _architecture(cfg)
    lines.append(_parameters(parameter_count(model), meta, on))
    lines += _layout(layout, resolution, on)
    lines += _recipe(meta.recipe)
    return "\n".join(lines)


def _default_tokenizer(meta) -> str:
    """The first tokenizer preset of ``meta``'s scale whose layout kind the generator family supports."""
    for name in TOKENIZERS.names(scale=meta.scale):
        try:
            _, tok = build_tokenizer(name, device="meta")
            check_generator_layout(meta.family, tok.layout)
        except (VQBenchError, NotImplementedError, *BUILD_ERRORS):
            continue
        return name
    raise VQBenchError(f"no {meta.scale} tokenizer preset has a layout the {meta.family} generator supports; "
                       "pass --tokenizer TOKENIZER_PRESET")


def _architecture(cfg) -> list[str]:
    values = to_dict(cfg)
    width = max(map(len, values), default=0)
    lines = [f"architecture ({type(cfg).__name__}):"]
    for f in dataclasses.fields(cfg):
        value = values[f.name]
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"  {f.name:<{width}} = {shown}")
    return lines


def _parameters(n: int, meta, on: str | None) -> str:
    stated = []
    if meta.get("paper_params"):
        stated.append(f"paper: {meta.paper_params / 1e6:,.0f}M, matched within 3%")
    if "paper_body_params" in meta:
        stated.append(f"paper: {meta.paper_body_params / 1e6:,.0f}M without the codebook-sized embedding "
                      "and head, as it counts")
    return (f"parameters: {n:,} ({n / 1e6:,.1f}M)" + (f" on {on}" if on else "")
            + (f" ({'; '.join(stated)})" if stated else ""))


def _layout(layout: TokenLayout, resolution: int | None, on: str | None) -> list[str]:
    sizes = layout.codebook_sizes
    grid = f" ({layout.grid[0]}x{layout.grid[1]} grid)" if layout.grid else ""
    if len(set(sizes)) == 1:
        codebook = f"K = {sizes[0]:,}"
    else:
        codebook = f"K_t from {min(sizes):,} to {max(sizes):,} (average {sum(sizes) / len(sizes):,.1f})"
    codes = (f"{layout.num_factors} sub-codes per position, each of K" if layout.num_factors > 1
             else "one code per position")
    bits = layout.bits_per_image
    per_pixel = f"; {bits / resolution ** 2:.4f} bits per pixel at {resolution}x{resolution}" if resolution else ""
    return [f"token layout{f' ({on})' if on else ''}: {layout.num_positions:,} {layout.position_kind} positions"
            f"{grid}, {codebook}, {codes}",
            f"bits per image: {bits:,.1f} (sum over positions of log2 K_t"
            f"{f' x {layout.num_factors} sub-codes' if layout.num_factors > 1 else ''}{per_pixel})"]


def _recipe(recipe) -> list[str]:
    other = "`vqbench train PRESET --help-settings` lists every setting"
    if not len(recipe):
        return [f"training recipe: none; the harness defaults ({other})"]
    key_w = max(len(v.key) for v in recipe)
    value_w = max(len(v.value) for v in recipe)
    lines = ["training recipe (applied before --set; [assumed]: not stated by the paper, with where the "
             "value comes from instead):"]
    for v in recipe:
        mark = "[assumed] " if v.is_assumed else ""
        lines.append(f"  {v.key:<{key_w}} = {v.value:<{value_w}}  {mark}{v.source_text}")
    if recipe.notes:
        lines.append("not modelled, or left to --set:")
        lines += [f"  - {note}" for note in recipe.notes]
    lines.append(f"other training settings: the harness defaults ({other})")
    return lines

