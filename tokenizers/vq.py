"""Patch-wise VQ tokenizer: VQGAN (Esser et al., CVPR 2021) with LlamaGen's options (Sun et al. 2024).

A CNN encoder maps the image to an h x w grid; each grid cell is one token, quantized against one
codebook. LlamaGen's choices are options: l2-normalized codes (cosine lookup) and a low-dimensional
lookup space reached through 1x1 projections (``codebook_dim`` = 8 with ``z_channels`` = 256).
Pixel, LPIPS and PatchGAN losses are added by the shared trainer (harness/training/losses.py).

Presets: ``vq-tiny`` (tests), ``vq-fmnist`` (default suite, 7x7 tokens on 28x28 Fashion-MNIST), the
ImageNet-256 presets ``vq-f16-imagenet`` (16x16 tokens) and ``vq-f8-imagenet`` (32x32 tokens) with
LlamaGen's VQ-16 / VQ-8 widths, K = 16384 and LlamaGen's training recipe, ``vqgan-taming-f16-imagenet``
(taming-transformers' released VQGAN ImageNet f16-16384, which ``vqbench import taming-vqgan-f16-16384``
loads: 256-dim unnormalised codes, right-bottom padded downsampling), and the CVQ paper's "Vanilla
VQ" baselines ``vq-vanilla-*-imagenet`` (Tables 1, 3): VQGAN's codes, unnormalised, at the dimension of
CVQ's codes (256 = 16 x 16), since Sec. 4 keeps "dimensionality parity" with CVQ (identical lookup
complexity: N tokens of 256-dim codes against K codes); 256 tokens at ratio 16 for K = 1024 ... 65536
(Table 3) and 1024 tokens at ratio 8 for K = 16384 (Table 1).

The CVQ paper's "VQ w/ dropout" (Table 4) applies nested dropout to patch tokens; its implementation is
deferred to an appendix that does not describe it, and this tokenizer has no token dropout, so there
is no preset for it.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.models.conv_tokenizer import ConvBackbone, ConvTokenizer
from harness.models.quantizers.vq import FMNIST_CODEBOOK_INIT, CodebookInit, VectorQuantizer
from harness.core.registry import TOKENIZERS
from harness.models.paper_recipes import CVQ_VQ_BASELINE, LLAMAGEN_TOKENIZER, TAMING_VQGAN


@dataclass(frozen=True)
class VQConfig(ConvBackbone):
    codebook_size: int = 16384
    l2_norm: bool = True
    beta: float = 0.25
    rotation_trick: bool = False     # Fifty et al. 2024: rotate-and-scale gradients instead of straight-through
    codebook_init: CodebookInit = "uniform"    # "data": codes start as encoder outputs of the first batches

    def build(self) -> "VQTokenizer":
        return VQTokenizer(self)


class VQTokenizer(ConvTokenizer):
    family = "vq"

    def make_quantizer(self, cfg: VQConfig) -> VectorQuantizer:
        return VectorQuantizer(cfg.codebook_size, cfg.codebook_dim, cfg.beta, cfg.l2_norm, cfg.rotation_trick)


@TOKENIZERS.register("vq-tiny", family="vq", scale="tiny",
                     description="8x8 tokens on 16x16 grayscale, K=64 (tests)")
def vq_tiny() -> VQConfig:
    return VQConfig(resolution=16, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                    z_channels=16, norm_groups=8, attention=False, codebook_size=64)


@TOKENIZERS.register("vq-fmnist", family="vq", scale="small",
                     description="7x7 tokens on 28x28 Fashion-MNIST, K=1024, dim 8, l2-normalized")
def vq_fmnist() -> VQConfig:
    return VQConfig(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                    z_channels=64, norm_groups=16, attention=False, codebook_size=1024)


@TOKENIZERS.register("vq-fmnist-d49", family="vq", scale="small",
                     description="vq-fmnist as VQGAN's vanilla VQ at CVQ's code dimension: unnormalised codes of dim "
                                 "49 (cvq-fmnist's 7x7 channel maps), codebook initialised as cvq-fmnist's")
def vq_fmnist_d49() -> VQConfig:
    # the CVQ paper's baseline keeps "dimensionality parity" with CVQ (Sec. 4): codes of the dimension of a
    # CVQ code (H1 * W1 = 49 here), no l2 normalisation
    return VQConfig(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                    z_channels=64, norm_groups=16, attention=False, codebook_size=1024, codebook_dim=49,
                    l2_norm=False, codebook_init=FMNIST_CODEBOOK_INIT)


@TOKENIZERS.register("vq-f16-imagenet", family="vq", scale="paper", paper_params=72e6, recipe=LLAMAGEN_TOKENIZER,
                     description="LlamaGen VQ-16: 16x16 tokens at 256x256, K=16384, dim 8 (72M)")
def vq_f16_imagenet() -> VQConfig:
    return VQConfig(downsample_padding="right-bottom")       # LlamaGen's encoder pads right and bottom


@TOKENIZERS.register("vq-f8-imagenet", family="vq", scale="paper", recipe=LLAMAGEN_TOKENIZER,
                     description="LlamaGen VQ-8: 32x32 tokens at 256x256, K=16384, dim 8")
def vq_f8_imagenet() -> VQConfig:
    return VQConfig(ch_mult=(1, 2, 2, 4), downsample_padding="right-bottom")


@TOKENIZERS.register("vqgan-taming-f16-imagenet", family="vq", scale="paper", recipe=TAMING_VQGAN,
                     description="taming-transformers' released VQGAN ImageNet f16-16384 (vqgan_imagenet_f16_16384): "
                                 "16x16 tokens at 256x256, K=16384, 256-dim codes by plain euclidean distance, "
                                 "right-bottom padded downsampling (`vqbench import taming-vqgan-f16-16384`)")
def vqgan_taming_f16_imagenet() -> VQConfig:
    # taming's VQModel at ch 128, ch_mult 1,1,2,2,4, 2 res blocks, attention at 16 (the lowest level) and in
    # the middle, z 256, embed_dim 256, n_embed 16384; VectorQuantizer2 looks codes up unnormalised
    return VQConfig(codebook_dim=256, l2_norm=False, downsample_padding="right-bottom")


def _register_cvq_baselines():
    # the CVQ paper's "Vanilla VQ" rows: 256 tokens at ratio 16 (Tables 1, 3), 1024 tokens at ratio 8 (Table 1)
    for tokens, ch_mult, ks in ((256, (1, 1, 2, 2, 4), (1024, 4096, 16384, 65536)), (1024, (1, 2, 2, 4), (16384,))):
        for k in ks:
            def preset(ch_mult=ch_mult, k=k) -> VQConfig:
                return VQConfig(ch_mult=ch_mult, z_channels=256, codebook_dim=256, l2_norm=False, codebook_size=k)
            side = 16 if tokens == 256 else 32
            TOKENIZERS.add(f"vq-vanilla-{tokens}-k{k // 1024}k-imagenet", preset, family="vq", scale="paper",
                           recipe=CVQ_VQ_BASELINE,
                           description=f"CVQ paper's Vanilla VQ baseline: {side}x{side} tokens at 256x256, K={k}, "
                                       "256-dim codes (parity with CVQ's 16x16 codes), not normalised")


_register_cvq_baselines()
