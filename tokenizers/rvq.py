"""Residual VQ tokenizer: ``rvq_depth`` codes per position, each quantizing the residual of the previous
ones (RQ-VAE, Lee et al., CVPR 2022; harness.models.quantizers.rvq), on the conv backbone of
harness.models.conv_tokenizer, a baseline that trains and evaluates like VQ.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.registry import TOKENIZERS
from harness.models.conv_tokenizer import FMNIST_BACKBONE, TINY_BACKBONE, ConvBackbone, ConvTokenizer
from harness.models.quantizers.rvq import ResidualVQAdapter


@dataclass(frozen=True)
class RVQConfig(ConvBackbone):
    codebook_size: int = 1024                    # per level
    rvq_depth: int = 2

    def build(self) -> "RVQTokenizer":
        return RVQTokenizer(self)


class RVQTokenizer(ConvTokenizer):
    family = "rvq"

    def make_quantizer(self, cfg: RVQConfig) -> ResidualVQAdapter:
        return ResidualVQAdapter(cfg.codebook_size, cfg.codebook_dim, cfg.rvq_depth)


@TOKENIZERS.register("rvq-tiny", family="rvq", scale="tiny", description="RVQ baseline on 16x16 gray (tests)")
def rvq_tiny() -> RVQConfig:
    return RVQConfig(**TINY_BACKBONE, codebook_size=64, rvq_depth=2)


@TOKENIZERS.register("rvq-fmnist", family="rvq", scale="small",
                     description="residual VQ, depth 2 x 1024 codes, 7x7 tokens on 28x28 Fashion-MNIST")
def rvq_fmnist() -> RVQConfig:
    return RVQConfig(**FMNIST_BACKBONE, codebook_size=1024, rvq_depth=2)
