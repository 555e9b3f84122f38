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

Verified offline (tests/test_released.py): the full key and shape list of each released model (built
from LlamaGen's definition) maps one to one onto the preset, and at small width the imported model
reproduces LlamaGen's own encoder, indices and reconstruction (reference outputs computed with
LlamaGen's code, stored in tests/data). Only a run on the real weights can show the published numbers
(VQ-16: rFID 2.19, PSNR 20.79 on ImageNet val, LlamaGen's protocol).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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

    def convert(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return convert_llamagen_vq(state_dict, self.ch_mult, self.num_res_blocks)


LLAMAGEN_SOURCE = "FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py (commit ce98ec4)"
RELEASED = {
    "llamagen-vq16": ReleasedTokenizer("llamagen-vq16", "vq-f16-imagenet", (1, 1, 2, 2, 4), 2,
                                       LLAMAGEN_SOURCE + ", VQ_16: vq_ds16_c2i.pt",
                                       "rFID 2.19, PSNR 20.79 (ImageNet val 256x256, LlamaGen Table 1)"),
    "llamagen-vq8": ReleasedTokenizer("llamagen-vq8", "vq-f8-imagenet", (1, 2, 2, 4), 2,
                                      LLAMAGEN_SOURCE + ", VQ_8: vq_ds8_c2i.pt",
                                      "rFID 0.59, PSNR 25.45 (ImageNet val 256x256, as FQGAN's Table 1 lists it)"),
}
DROPPED = ("quantize.codebook_used",)
_BLOCK = re.compile(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(res|attn|downsample|upsample)\.(?:(\d+)\.)?(.*)")


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
        new = new.replace(".nin_shortcut.", ".skip.").replace(".proj_out.", ".proj.")
        attention = re.fullmatch(r"(.*)\.([qkv])\.(weight|bias)", new)
        if attention:
            qkv.setdefault((attention.group(1), attention.group(3)), {})[attention.group(2)] = value
        else:
            out[new] = value
    for (base, what), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise VQBenchError(f"attention {base} lacks its {', '.join(sorted({'q', 'k', 'v'} - set(parts)))} weights")
        out[f"{base}.qkv.{what}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def read_released(path: Path, weights: str) -> dict[str, torch.Tensor]:
    """The state dict in a released ``.pt`` file: its ``weights`` entry ("model" or "ema"), or the file
    itself when it is a bare state dict; ``module.`` / ``_orig_mod.`` prefixes removed."""
    import argparse
    path = Path(path)
    if not path.is_file():
        raise VQBenchError(f"{path} does not exist; give the released checkpoint file (e.g. vq_ds16_c2i.pt)")
    try:
        # the training script stores its argparse.Namespace beside the weights: allowed, nothing else
        with torch.serialization.safe_globals([argparse.Namespace]):
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
        have = ", ".join(k for k, v in data.items() if isinstance(v, dict)) or "none"
        raise VQBenchError(f"{path} has no {weights!r} state dict (dict entries: {have}); use --weights model or ema")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def import_released(name: str, path: Path, out_dir: Path, *, weights: str, dataset: str) -> Path:
    """Write ``out_dir`` as a vqbench tokenizer run holding the released weights; returns its checkpoint."""
    from harness.core import checkpoint as ckpt
    from harness.core.config import to_dict
    from harness.core.results import package_versions
    from harness.core.weights import file_sha256
    from harness.models.catalog import build_tokenizer, load_all
    if name not in RELEASED:
        raise VQBenchError(f"unknown released tokenizer {name!r}; choose from {', '.join(RELEASED)}")
    if weights not in ("model", "ema"):
        raise VQBenchError(f"--weights {weights!r}: use model or ema")
    from harness.core.registry import DATASETS
    DATASETS.get(dataset.partition(":")[0])          # an unknown name fails here, naming the choices
    released = RELEASED[name]
    out_dir = Path(out_dir)
    if (out_dir / "checkpoints").exists():
        raise VQBenchError(f"{out_dir} already holds checkpoints; import into a new --out folder")
    converted = released.convert(read_released(path, weights))
    load_all()
    cfg, model = build_tokenizer(released.preset)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(converted)), sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise VQBenchError(f"{path} is not {name} ({released.preset}): {len(missing)} weights missing (first: "
                           f"{(missing or ['-'])[0]}), {len(unexpected)} unexpected (first: {(unexpected or ['-'])[0]})")
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
