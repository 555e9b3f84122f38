"""Released tokenizer checkpoints mapped onto vqbench presets: `vqbench import NAME FILE --out RUN_DIR`
writes a vqbench tokenizer run that `vqbench eval` and generator training read like any other.

- ``llamagen-vq16`` / ``llamagen-vq8``: LlamaGen's VQ-16 / VQ-8 (``vq_ds16_c2i.pt`` / ``vq_ds8_c2i.pt``;
  ``tokenizer/tokenizer_image/vq_model.py`` of FoundationVision/LlamaGen, read at commit ce98ec4) onto
  ``vq-f16-imagenet`` / ``vq-f8-imagenet``. The same VQGAN layout under other names: ``conv_blocks.B``
  of the encoder (level B) and decoder (level n-1-B) become positions of vqbench's ``down`` / ``up``
  sequences, the attention's separate q, k, v 1x1 convs one fused ``qkv`` conv (rows q, k, v),
  ``nin_shortcut`` -> ``skip``, ``proj_out`` -> ``proj``, ``quant_conv`` -> ``quant_proj``,
  ``post_quant_conv`` -> ``post_quant_proj``, ``quantize.embedding`` -> ``quantizer.embedding``;
  ``quantize.codebook_used`` (a training-time usage buffer) is dropped. Both presets downsample as
  LlamaGen does (right-bottom padding, ``harness.models.nn.RightBottomPaddedConv``) and look codes up
  l2-normalised (their ``l2_norm``, LlamaGen's ``codebook_l2_norm``), so the imported model computes
  what LlamaGen's does.
  LlamaGen's scripts load ``checkpoint["model"]`` (its tokenizer demo prefers ``"ema"``): ``--weights``.
- ``taming-vqgan-f16-16384``: taming-transformers' VQGAN ImageNet f16-16384 (``vqgan_imagenet_f16_16384``,
  ``ckpts/last.ckpt``; ``taming/models/vqgan.py`` VQModel of CompVis/taming-transformers, read at
  commit 3ba01b2) onto ``vqgan-taming-f16-imagenet``. The same layers as LlamaGen's under taming's
  names: ``encoder.down.L`` / ``decoder.up.L`` are indexed by resolution level L in both (LlamaGen's
  decoder counts blocks in the order they run, level n-1 first), ``block.J`` -> ResNet block J,
  ``attn.J``, ``downsample.conv`` / ``upsample.conv``, ``mid.block_1`` / ``attn_1`` / ``block_2`` -> ``mid.0``
  / ``1`` / ``2``; q, k, v, ``nin_shortcut``, ``proj_out`` and the projections as for LlamaGen, and
  ``quantize.embedding`` (taming's VectorQuantizer2). The Lightning checkpoint's ``loss.*`` (LPIPS and
  the discriminator) is dropped; any key that is no layer of that model is refused, named. The preset
  pads right and bottom before each stride-2 conv (taming's Downsample) and looks codes up by plain
  euclidean distance on 256 dimensions (``l2_norm`` off); GroupNorm(32, eps 1e-6), swish, attention at
  16x16 and in the middle, and no tanh after the decoder are what the shared encoder/decoder
  (harness.models.nn) already compute. Read from
  ``checkpoint["state_dict"]``; Lightning stores its callbacks keyed by their classes, which are read as
  inert stand-ins (``pytorch_lightning.callbacks.*`` only), so the file still loads with weights_only.

Verified offline (tests/test_released.py, tests/test_released_taming.py): the full key and shape list of
each released model (built from LlamaGen's and taming's own definitions) maps one to one onto the
preset, and at small width the imported model reproduces the source code's own encoder, indices and
reconstruction (reference outputs computed with LlamaGen's and taming's code, stored in tests/data).
Only a run on the real weights can show the published numbers (VQ-16: rFID 2.19, PSNR 20.79 on
ImageNet val, LlamaGen's protocol; taming f16-16384: rFID 4.98 against ImageNet val, taming's README,
torch-fidelity).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from harness.core.errors import VQBenchError


@dataclass(frozen=True)
class ReleasedTokenizer:
    name: str
    preset: str
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    source: str
    published: str
    family: str = "llamagen"          # a key of FAMILIES: the layout of the file and its converter

    def convert(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return FAMILIES[self.family].convert(state_dict, self.ch_mult, self.num_res_blocks)


LLAMAGEN_SOURCE = "FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py (commit ce98ec4)"
TAMING_SOURCE = "CompVis/taming-transformers taming/models/vqgan.py VQModel (commit 3ba01b2)"
RELEASED = {
    "llamagen-vq16": ReleasedTokenizer("llamagen-vq16", "vq-f16-imagenet", (1, 1, 2, 2, 4), 2,
                                       LLAMAGEN_SOURCE + ", VQ_16: vq_ds16_c2i.pt",
                                       "rFID 2.19, PSNR 20.79 (ImageNet val 256x256, LlamaGen Table 1)"),
    "llamagen-vq8": ReleasedTokenizer("llamagen-vq8", "vq-f8-imagenet", (1, 2, 2, 4), 2,
                                      LLAMAGEN_SOURCE + ", VQ_8: vq_ds8_c2i.pt",
                                      "rFID 0.59, PSNR 25.45 (ImageNet val 256x256, as FQGAN's Table 1 lists it)"),
    "taming-vqgan-f16-16384": ReleasedTokenizer(
        "taming-vqgan-f16-16384", "vqgan-taming-f16-imagenet", (1, 1, 2, 2, 4), 2,
        TAMING_SOURCE + ", VQGAN ImageNet (f=16), 16384: vqgan_imagenet_f16_16384 ckpts/last.ckpt",
        "rFID 4.98 against ImageNet val, 7.41 against train (256x256, torch-fidelity; taming-transformers "
        "README; FQGAN's Table 1 lists rFID 4.98)", family="taming"),
}
DROPPED = ("quantize.codebook_used",)
_BLOCK = re.compile(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(res|attn|downsample|upsample)\.(?:(\d+)\.)?(.*)")


def _add_renamed(new: str, value: torch.Tensor, out: dict, qkv: dict) -> None:
    """The names both VQGAN layouts share: ``nin_shortcut`` -> ``skip``, ``proj_out`` -> ``proj``; an
    attention's separate q, k, v convs are held in ``qkv`` for ``_fuse_qkv``, everything else goes to ``out``."""
    new = new.replace(".nin_shortcut.", ".skip.").replace(".proj_out.", ".proj.")
    attention = re.fullmatch(r"(.*)\.([qkv])\.(weight|bias)", new)
    if attention:
        qkv.setdefault((attention.group(1), attention.group(3)), {})[attention.group(2)] = value
    else:
        out[new] = value


def _positions(ch_mult: tuple[int, ...], num_res_blocks: int, decoder: bool) -> dict[tuple[int, str, int], int]:
    """vqbench's position in ``encoder.down`` / ``decoder.up`` of LlamaGen's (block, kind, index):
    the order harness.models.nn.Encoder / Decoder append their layers in."""
    n, table, position = len(ch_mult), {}, 0
    for block in range(n):
        level = n - 1 - block if decoder else block
        for j in range(num_res_blocks + (1 if decoder else 0)):
            table[(block, "res", j)] = position
            position += 1
            if level == n - 1:                                   # attention at the lowest resolution
                table[(block, "attn", j)] = position
                position += 1
        if (decoder and level != 0) or (not decoder and level != n - 1):
            table[(block, "upsample" if decoder else "downsample", 0)] = position
            position += 1
    return table


def convert_llamagen_vq(state_dict: dict[str, torch.Tensor], ch_mult: tuple[int, ...],
                        num_res_blocks: int) -> dict[str, torch.Tensor]:
    """A LlamaGen VQModel state dict under vqbench's ConvTokenizer names (module docstring)."""
    encoder, decoder = _positions(ch_mult, num_res_blocks, False), _positions(ch_mult, num_res_blocks, True)
    renamed = {"quant_conv.": "quant_proj.", "post_quant_conv.": "post_quant_proj.",
               "quantize.embedding.": "quantizer.embedding."}
    out, qkv = {}, {}
    for key, value in state_dict.items():
        if key in DROPPED:
            continue
        new = next((to + key[len(frm):] for frm, to in renamed.items() if key.startswith(frm)), key)
        m = _BLOCK.fullmatch(key)
        if m:
            part, block, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4) or 0), m.group(5)
            table = encoder if part == "encoder" else decoder
            if (block, kind, j) not in table:
                raise VQBenchError(f"{key} is not a layer of LlamaGen's VQ model with ch_mult {list(ch_mult)}")
            if kind == "downsample":
                rest = rest.removeprefix("conv.")                 # LlamaGen wraps the conv; vqbench does not
            new = f"{part}.{'down' if part == 'encoder' else 'up'}.{table[(block, kind, j)]}.{rest}"
        _add_renamed(new, value, out, qkv)
    return _fuse_qkv(out, qkv)


def _fuse_qkv(out: dict[str, torch.Tensor], qkv: dict[tuple[str, str], dict[str, torch.Tensor]]) -> dict:
    """``out`` with each attention's separate q, k, v 1x1 convs as one ``qkv`` conv (rows q, k, v)."""
    for (base, what), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise VQBenchError(f"attention {base} lacks its {', '.join(sorted({'q', 'k', 'v'} - set(parts)))} weights")
        out[f"{base}.qkv.{what}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


_TAMING_LEVEL = re.compile(r"(encoder\.down|decoder\.up)\.(\d+)\.(block|attn|downsample|upsample)\.(?:(\d+)\.)?(.*)")
_TAMING_MID = re.compile(r"(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.(.*)")
_TAMING_LEAF = {"res": re.compile(r"(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)"),
                "attn": re.compile(r"(norm|q|k|v|proj_out)\.(weight|bias)"),
                "downsample": re.compile(r"conv\.(weight|bias)"), "upsample": re.compile(r"conv\.(weight|bias)")}
_TAMING_PLAIN = re.compile(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(weight|bias)|"
                           r"(quant_conv|post_quant_conv)\.(weight|bias)|quantize\.embedding\.weight")
TAMING_DROPPED = "loss."        # VQLPIPSWithDiscriminator: LPIPS and the PatchGAN discriminator


def convert_taming_vq(state_dict: dict[str, torch.Tensor], ch_mult: tuple[int, ...],
                      num_res_blocks: int) -> dict[str, torch.Tensor]:
    """A taming-transformers VQModel state dict under vqbench's ConvTokenizer names (module docstring).
    A key that is no weight of taming's VQModel with this ``ch_mult``, ``num_res_blocks`` and attention at
    the lowest resolution only is refused, all of them named in one line."""
    n = len(ch_mult)
    tables = {"encoder": _positions(ch_mult, num_res_blocks, False),
              "decoder": _positions(ch_mult, num_res_blocks, True)}
    renamed = {"quant_conv.": "quant_proj.", "post_quant_conv.": "post_quant_proj.",
               "quantize.embedding.": "quantizer.embedding."}
    out, qkv, foreign = {}, {}, []
    for key, value in state_dict.items():
        if key.startswith(TAMING_DROPPED):
            continue
        level, mid = _TAMING_LEVEL.fullmatch(key), _TAMING_MID.fullmatch(key)
        if level:
            where, lvl, kind, j, rest = level.groups()
            lvl = int(lvl)
            part = where.partition(".")[0]
            kind = "res" if kind == "block" else kind
            # LlamaGen's block index, which _positions is keyed by: the decoder runs level n-1 first
            block = lvl if part == "encoder" else n - 1 - lvl
            position = tables[part].get((block, kind, int(j or 0)))
            if position is None or (j is None) != (kind in ("downsample", "upsample")) \
                    or not _TAMING_LEAF[kind].fullmatch(rest):
                foreign.append(key)
                continue
            if kind == "downsample":
                rest = rest.removeprefix("conv.")              # taming wraps the padded conv; vqbench does not
            new = f"{where}.{position}.{rest}"
        elif mid and _TAMING_LEAF["attn" if mid.group(2) == "attn_1" else "res"].fullmatch(mid.group(3)):
            new = f"{mid.group(1)}.mid.{('block_1', 'attn_1', 'block_2').index(mid.group(2))}.{mid.group(3)}"
        elif _TAMING_PLAIN.fullmatch(key):
            new = next((to + key[len(frm):] for frm, to in renamed.items() if key.startswith(frm)), key)
        else:
            foreign.append(key)
            continue
        _add_renamed(new, value, out, qkv)
    if foreign:
        raise VQBenchError(f"{len(foreign)} keys are not weights of taming's VQModel with ch_mult {list(ch_mult)}, "
                           f"{num_res_blocks} ResNet blocks and attention at the lowest resolution: "
                           + ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else ""))
    return _fuse_qkv(out, qkv)


@dataclass(frozen=True)
class ReleasedFamily:
    """How a family's released files are laid out: its converter and the file's entries that hold a
    state dict (the first is read unless --weights names another)."""
    convert: Callable[[dict[str, torch.Tensor], tuple[int, ...], int], dict[str, torch.Tensor]]
    weights: tuple[str, ...]
    example: str                       # what the released file is called, for messages


FAMILIES = {"llamagen": ReleasedFamily(convert_llamagen_vq, ("model", "ema"), "vq_ds16_c2i.pt"),
            "taming": ReleasedFamily(convert_taming_vq, ("state_dict",), "last.ckpt")}
# Lightning checkpoints key their callbacks' states by the callback classes; these are read as inert
# stand-ins (never imported, nothing of them runs), anything else outside torch's allowlist is refused
LIGHTNING_CALLBACKS = ("pytorch_lightning.callbacks.", "lightning.pytorch.callbacks.")


def _stand_in(full_name: str) -> tuple[type, str]:
    module, _, name = full_name.rpartition(".")
    return type(name, (), {"__module__": module, "__qualname__": name}), full_name


def read_released(path: Path, weights: str, entries: tuple[str, ...] = ("model", "ema"),
                  example: str = "vq_ds16_c2i.pt") -> dict[str, torch.Tensor]:
    """The state dict in a released checkpoint file: its ``weights`` entry (one of ``entries``: "model" or
    "ema" for LlamaGen, "state_dict" for a Lightning checkpoint), or the file itself when it is a bare
    state dict; ``module.`` / ``_orig_mod.`` prefixes removed."""
    import argparse
    path = Path(path)
    if not path.is_file():
        raise VQBenchError(f"{path} does not exist; give the released checkpoint file (e.g. {example})")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:                            # not a zip checkpoint: torch.load below says what it is
        unsafe = []
    # LlamaGen's training script stores its argparse.Namespace beside the weights, Lightning its callbacks'
    # classes: allowed (the classes as stand-ins), nothing else
    allowed = [argparse.Namespace] + [_stand_in(g) for g in unsafe if g.startswith(LIGHTNING_CALLBACKS)]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                       # unpickling or format errors of many kinds
        first = (str(e).splitlines() or [""])[0][:160]
        raise VQBenchError(f"{path} is not a PyTorch checkpoint vqbench can read safely ({type(e).__name__}"
                           + (f": {first})" if first else ")")) from None
    if not isinstance(data, dict):
        raise VQBenchError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    if all(isinstance(v, torch.Tensor) for v in data.values()):
        state = data
    elif isinstance(data.get(weights), dict):
        state = data[weights]
    else:
        have = ", ".join(str(k) for k, v in data.items() if isinstance(v, dict)) or "none"
        raise VQBenchError(f"{path} has no {weights!r} state dict (dict entries: {have}); use --weights "
                           + " or ".join(entries))
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def import_released(name: str, path: Path, out_dir: Path, *, weights: str | None, dataset: str) -> Path:
    """Write ``out_dir`` as a vqbench tokenizer run holding the released weights; returns its checkpoint.
    ``weights``: the file's entry to read (None: the family's first, "model" or "state_dict")."""
    from harness.core import checkpoint as ckpt
    from harness.core.config import to_dict
    from harness.core.results import package_versions
    from harness.core.weights import file_sha256
    from harness.models.catalog import build_tokenizer, load_all
    if name not in RELEASED:
        raise VQBenchError(f"unknown released tokenizer {name!r}; choose from {', '.join(RELEASED)}")
    released = RELEASED[name]
    family = FAMILIES[released.family]
    weights = family.weights[0] if weights is None else weights
    if weights not in family.weights:
        raise VQBenchError(f"--weights {weights!r}: {name}'s file holds " + " or ".join(family.weights))
    from harness.core.registry import DATASETS
    DATASETS.get(dataset.partition(":")[0])          # an unknown name fails here, naming the choices
    out_dir = Path(out_dir)
    if (out_dir / "checkpoints").exists():
        raise VQBenchError(f"{out_dir} already holds checkpoints; import into a new --out folder")
    source = read_released(path, weights, family.weights, family.example)
    try:
        converted = released.convert(source)
    except VQBenchError as e:
        raise VQBenchError(f"{path} is not {name} ({released.preset}): {e}") from None
    load_all()
    cfg, model = build_tokenizer(released.preset)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(converted)), sorted(set(converted) - set(expected))
    if missing or unexpected:
        def first(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "") if keys else "-"
        raise VQBenchError(f"{path} is not {name} ({released.preset}): {len(missing)} weights missing (first: "
                           f"{first(missing)}), {len(unexpected)} unexpected (first: {first(unexpected)})")
    wrong = [k for k in expected if converted[k].shape != expected[k].shape]
    if wrong:
        raise VQBenchError(f"{path}: {wrong[0]} has shape {tuple(converted[wrong[0]].shape)}, {released.preset} "
                           f"needs {tuple(expected[wrong[0]].shape)} ({len(wrong)} tensors differ)")
    model.load_state_dict({k: v.float() for k, v in converted.items()})
    sha = file_sha256(Path(path))
    state = {"kind": "tokenizer", "preset": released.preset, "family": model.family,
             "model_config": to_dict(cfg), "train_config": {"seed": None},     # not trained here
             "data": {"dataset": dataset, "split": "train", "n_train": None},
             "config_hash": f"import-{name}-{sha[:12]}", "step": 0, "done": True,
             "imported_from": {"name": name, "file": str(Path(path).resolve()), "sha256": sha, "weights": weights,
                               "source": released.source, "published": released.published},
             "world_size": 1, "package_versions": package_versions()}
    return ckpt.save(out_dir / "checkpoints", 0, {f"model.{k}": v for k, v in model.state_dict().items()}, {}, state)
