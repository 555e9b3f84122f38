"""Write tests/data/taming_* with taming-transformers' own model code (not part of the test run).

    python tests/data/make_taming_reference.py /path/to/taming-transformers

The checkout used: CompVis/taming-transformers at commit 3ba01b241669f5ade541ce990f7650a3b8f65318.
taming is not pip-installable here; its ``taming/models/vqgan.py`` imports pytorch_lightning and the
repository's ``main.py`` (training only), which are replaced by stand-ins below, and its LPIPS loss
would download VGG16 and LPIPS weights, so those are built unweighted (only their names and shapes are
used). Everything the files record is computed by taming's classes: ``VQModel``, and through it
``Encoder`` / ``Decoder`` (taming/modules/diffusionmodules/model.py), ``VectorQuantizer2``
(taming/modules/vqvae/quantize.py) and ``VQLPIPSWithDiscriminator`` (taming/modules/losses/vqperceptual.py).

Writes
- taming_vqgan_f16_16384_state_dict.txt: every key and shape of ``VQModel``'s state dict at the
  released ImageNet f16-16384 model's settings (README "VQGAN ImageNet (f=16), 16384": ch 128,
  ch_mult 1,1,2,2,4, 2 res blocks, attention at 16, z 256, embed_dim 256, n_embed 16384), built on the
  meta device, ``loss.*`` (LPIPS and a 2-layer discriminator, see FULL_LOSS) included, as a Lightning
  ``state_dict`` holds them;
- taming_small_state_dict.txt: the same for a small model (ch 32, ch_mult 1,1,2, attention at 8,
  resolution 32, z 32, embed_dim 16, n_embed 64), its loss a DummyLoss (no weights);
- taming_small_reference.safetensors: that small model's outputs with weights from ``fill`` (the same
  rule as tests/test_released_taming.py): ``x`` (2 x 3 x 32 x 32 in [-1, 1]), ``latent`` (quant_conv of
  the encoder), ``indices`` (N x h*w, raster order) and ``reconstruction`` (decode of the quantized
  latent), in eval mode.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent
FULL = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 1, 2, 2, 4],
            num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
SMALL = dict(FULL, z_channels=32, resolution=32, ch=32, ch_mult=[1, 1, 2], attn_resolutions=[8])
# the released model's loss as third-party copies of its configs/model.yaml quote it (the release itself,
# heibox vqgan_imagenet_f16_16384, is not read offline; the repository's configs/imagenet_vqgan.yaml is the
# f16-1024 model's and has a 3-layer discriminator): only names and shapes are written, which depend on
# disc_num_layers and disc_in_channels, not on the start step or the weights
FULL_LOSS = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
             "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0, "disc_weight": 0.75,
                        "disc_num_layers": 2, "codebook_weight": 1.0}}
NO_LOSS = {"target": "taming.modules.losses.vqperceptual.DummyLoss"}


def fill(key: str, shape: tuple[int, ...], i: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + i)
    v = torch.randn(shape, generator=g)
    if ".norm" in key and key.endswith(".weight"):
        return 1 + 0.1 * v
    fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
    return v * (0.1 if len(shape) == 1 else fan_in ** -0.5)


def stand_ins() -> None:
    """Modules vqgan.py imports for training only: a LightningModule that is an nn.Module, and main.py's
    instantiate_from_config."""
    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = torch.nn.Module
    sys.modules["pytorch_lightning"] = pl
    main = types.ModuleType("main")

    def instantiate_from_config(config):
        module, cls = config["target"].rsplit(".", 1)
        return getattr(importlib.import_module(module), cls)(**config.get("params", {}))
    main.instantiate_from_config = instantiate_from_config
    sys.modules["main"] = main


def unweighted_lpips() -> None:
    import torchvision
    from taming.modules.losses import lpips
    lpips.models = types.SimpleNamespace(vgg16=lambda pretrained=False: torchvision.models.vgg16(weights=None))
    lpips.LPIPS.load_from_pretrained = lambda self, name="vgg_lpips": None


def write_shapes(path: Path, state: dict, what: str) -> None:
    lines = [f"# state-dict keys and shapes of {what}, built with CompVis/taming-transformers "
             "taming/models/vqgan.py VQModel (commit 3ba01b2) by tests/data/make_taming_reference.py"]
    lines += [f"{k} {','.join(map(str, v.shape))}" for k, v in state.items()]
    path.write_text("\n".join(lines) + "\n")


def main(root: str) -> None:
    sys.path.insert(0, str(Path(root).resolve()))
    stand_ins()
    unweighted_lpips()
    from taming.models.vqgan import VQModel
    with torch.device("meta"):
        full = VQModel(ddconfig=FULL, lossconfig=FULL_LOSS, n_embed=16384, embed_dim=256)
    write_shapes(OUT / "taming_vqgan_f16_16384_state_dict.txt", full.state_dict(),
                 "taming's VQGAN ImageNet f16-16384 (vqgan_imagenet_f16_16384)")
    small = VQModel(ddconfig=SMALL, lossconfig=NO_LOSS, n_embed=64, embed_dim=16)
    shapes = {k: tuple(v.shape) for k, v in small.state_dict().items()}
    write_shapes(OUT / "taming_small_state_dict.txt", small.state_dict(), "a small taming VQModel (ch 32, "
                 "ch_mult 1,1,2, attention at 8, resolution 32, z 32, embed_dim 16, n_embed 64)")
    small.load_state_dict({k: fill(k, s, i) for i, (k, s) in enumerate(shapes.items())})
    small.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        latent = small.quant_conv(small.encoder(x))
        quant, _, (_, _, indices) = small.quantize(latent)
        reconstruction = small.decode(quant)
    save_file({"x": x, "latent": latent.contiguous(), "indices": indices.reshape(2, -1).contiguous(),
               "reconstruction": reconstruction.contiguous()}, OUT / "taming_small_reference.safetensors")


if __name__ == "__main__":
    main(sys.argv[1])
