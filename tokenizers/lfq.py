"""LFQ tokenizer: lookup-free quantization (MAGVIT-v2, Yu et al., ICLR 2024; harness.models.quantizers.lfq)
on the conv backbone of harness.models.conv_tokenizer, a baseline that trains and evaluates like VQ.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.registry import TOKENIZERS
from harness.models.conv_tokenizer import FMNIST_BACKBONE, TINY_BACKBONE, ConvBackbone, ConvTokenizer
from harness.models.quantizers.lfq import LFQAdapter


@dataclass(frozen=True)
class LFQConfig(ConvBackbone):
    codebook_size: int = 1024                    # 2^codebook_dim: one bit per code dimension
    lfq_entropy_weight: float = 0.1
    lfq_commitment_weight: float = 0.25

    def build(self) -> "LFQTokenizer":
        return LFQTokenizer(self)


class LFQTokenizer(ConvTokenizer):
    family = "lfq"

    def make_quantizer(self, cfg: LFQConfig) -> LFQAdapter:
        return LFQAdapter(cfg.codebook_size, cfg.codebook_dim, cfg.lfq_entropy_weight, cfg.lfq_commitment_weight)


@TOKENIZERS.register("lfq-tiny", family="lfq", scale="tiny", description="LFQ baseline on 16x16 gray (tests)")
def lfq_tiny() -> LFQConfig:
    return LFQConfig(**TINY_BACKBONE, codebook_size=64, codebook_dim=6)


@TOKENIZERS.register("lfq-fmnist", family="lfq", scale="small",
                     description="LFQ, 10 bits (1024 codes) + entropy loss, 7x7 tokens on 28x28 Fashion-MNIST")
def lfq_fmnist() -> LFQConfig:
    return LFQConfig(**FMNIST_BACKBONE, codebook_size=1024, codebook_dim=10)
