"""FQGAN: factorized quantization with k sub-codebooks (fqgan-factorized-quantization.txt, Sec. 3.2).

A shared VQGAN encoder feeds k adapters; each adapter's output is quantized against its own
sub-codebook (LlamaGen-style: l2-normalized codes of dim 8), and the k quantized features are
concatenated along channels into the decoder. Every position therefore holds k codes (indices
N x T x k). Two regularizers:
- disentanglement (eq. 7): the squared dot product of the l2-normalized sub-codes of each patch,
  averaged over patches and summed over pairs, weight ``lambda1`` = 0.1;
- representation learning (eq. 8): the last sub-codebook predicts a frozen teacher's features
  through a small prediction head, weight ``lambda2`` = 0.5. The paper's teachers are CLIP (Dual)
  and CLIP + DINOv2 (Triple); here any registered feature extractor (``vgg16``, ``alexnet``) or
  ``none``. The loss is 1 - cosine similarity per position (the text does not give its form).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.conv_tokenizer import ConvBackbone
from harness.nn import ResnetBlock, crop_to, encoder_decoder, latent_side
from harness.quantize import VectorQuantizer
from harness.registry import FEATURE_EXTRACTORS, TOKENIZERS


@dataclass(frozen=True)
class FQConfig(ConvBackbone):
    num_factors: int = 2
    codebook_size: int = 16384            # per sub-codebook, of dimension codebook_dim
    l2_norm: bool = True
    beta: float = 0.25
    disentangle_weight: float = 0.1       # lambda1
    representation_weight: float = 0.5   # lambda2
    teacher: str = "vgg16"                # a FEATURE_EXTRACTORS name, or "none"

    def build(self) -> "FQTokenizer":
        return FQTokenizer(self)


class FQTokenizer(Tokenizer):
    family = "fq"

    def __init__(self, cfg: FQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = encoder_decoder(cfg, cfg.z_channels)
        self.adapters = nn.ModuleList([
            nn.Sequential(ResnetBlock(cfg.z_channels, cfg.z_channels, cfg.norm_groups),
                          nn.Conv2d(cfg.z_channels, cfg.codebook_dim, 1))
            for _ in range(cfg.num_factors)])
        self.quantizers = nn.ModuleList([VectorQuantizer(cfg.codebook_size, cfg.codebook_dim, cfg.beta, cfg.l2_norm)
                                         for _ in range(cfg.num_factors)])
        self.post_quant_proj = nn.Conv2d(cfg.num_factors * cfg.codebook_dim, cfg.z_channels, 1)
        side = latent_side(cfg.resolution, cfg.ch_mult)
        self.grid = (side, side)
        self.layout = TokenLayout.constant(side * side, cfg.codebook_size, num_factors=cfg.num_factors,
                                           position_kind="spatial", grid=self.grid)
        self._teacher = None                  # built lazily, kept out of the state dict (frozen)
        self.teacher_dim = 0
        if cfg.teacher != "none" and cfg.representation_weight > 0:
            self.teacher_dim = FEATURE_EXTRACTORS.entry(cfg.teacher).meta["dim"]
            self.rep_head = nn.Sequential(nn.Conv2d(cfg.codebook_dim, cfg.z_channels, 1), nn.GELU(),
                                          nn.Conv2d(cfg.z_channels, self.teacher_dim, 1))

    def teacher(self, device) -> nn.Module:
        if self._teacher is None:     # via __dict__: a frozen teacher is not part of the state dict
            self.__dict__["_teacher"] = FEATURE_EXTRACTORS.get(self.cfg.teacher)()
        return self._teacher.to(device)

    def _branches(self, x: torch.Tensor):
        h = self.encoder(x)
        return [q(a(h).permute(0, 2, 3, 1)) for a, q in zip(self.adapters, self.quantizers)]  # N x h x w x D each

    def _decode_grid(self, parts: list[torch.Tensor]) -> torch.Tensor:
        z = torch.cat(parts, dim=-1).permute(0, 3, 1, 2)
        return crop_to(self.decoder(self.post_quant_proj(z)), (self.cfg.resolution, self.cfg.resolution))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b.indices.flatten(1) for b in self._branches(x)], dim=-1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        n = indices.shape[0]
        parts = [q.lookup(indices[..., i]).view(n, *self.grid, -1) for i, q in enumerate(self.quantizers)]
        return self._decode_grid(parts)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        branches = self._branches(x)
        quantized = [b.quantized for b in branches]
        losses = {f"{k}_f{i}": v for i, b in enumerate(branches) for k, v in b.losses.items()}
        if self.cfg.num_factors > 1 and self.cfg.disentangle_weight > 0:
            losses["disentangle"] = self.cfg.disentangle_weight * disentangle_loss(quantized)
        if self.teacher_dim and self.training:
            target = self.teacher(x.device)(x)
            pred = self.rep_head(quantized[-1].permute(0, 3, 1, 2))
            target = F.adaptive_avg_pool2d(target, pred.shape[-2:])
            losses["representation"] = self.cfg.representation_weight * (
                1 - F.cosine_similarity(pred, target, dim=1)).mean()
        indices = torch.stack([b.indices.flatten(1) for b in branches], dim=-1)
        return TokenizerOutput(self._decode_grid(quantized), indices, losses)

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.cat([q.lookup(indices[..., i]) for i, q in enumerate(self.quantizers)], dim=-1)

    def last_layer_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


def disentangle_loss(codes: list[torch.Tensor]) -> torch.Tensor:
    """Mean over patches of the squared cosine between each pair of a patch's sub-codes (eq. 7)."""
    unit = [F.normalize(c.flatten(0, -2), dim=-1) for c in codes]
    total = 0.0
    for i in range(len(unit)):
        for j in range(i + 1, len(unit)):
            total = total + (unit[i] * unit[j]).sum(-1).pow(2).mean()
    return total


@TOKENIZERS.register("fq-tiny", family="fq", scale="tiny",
                     description="FQ-Dual, 8x8 positions x 2 sub-codes on 16x16 gray, K=64 each, AlexNet teacher (tests)")
def fq_tiny() -> FQConfig:
    return FQConfig(resolution=16, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=16,
                    norm_groups=8, attention=False, codebook_size=64, teacher="alexnet")


@TOKENIZERS.register("fq-dual-fmnist", family="fq", scale="small",
                     description="FQ-Dual on 28x28 Fashion-MNIST: 7x7 positions x 2 sub-codes, K=1024 each, AlexNet teacher")
def fq_dual_fmnist() -> FQConfig:
    return FQConfig(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=64,
                    norm_groups=16, attention=False, codebook_size=1024, teacher="alexnet")


@TOKENIZERS.register("fqgan-dual-imagenet", family="fq", scale="paper",
                     description="FQGAN-Dual: 16x16 positions x 2 sub-codes at 256x256, K=16384 x 2, dim 8")
def fqgan_dual_imagenet() -> FQConfig:
    return FQConfig(num_factors=2)


@TOKENIZERS.register("fqgan-triple-imagenet", family="fq", scale="paper",
                     description="FQGAN-Triple: 16x16 positions x 3 sub-codes at 256x256, K=16384 x 3, dim 8")
def fqgan_triple_imagenet() -> FQConfig:
    return FQConfig(num_factors=3)
