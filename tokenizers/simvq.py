"""SimVQ tokenizer: a linearly reparameterized frozen codebook (Zhu et al., 2024;
harness.models.quantizers.simvq) on the conv backbone of harness.models.conv_tokenizer, a baseline
that trains and evaluates like VQ.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.registry import TOKENIZERS
from harness.models.conv_tokenizer import FMNIST_BACKBONE, TINY_BACKBONE, ConvBackbone, ConvTokenizer
from harness.models.quantizers.simvq import SimVQAdapter


@dataclass(frozen=True)
class SimVQConfig(ConvBackbone):
    codebook_size: int = 1024

    def build(self) -> "SimVQTokenizer":
        return SimVQTokenizer(self)


class SimVQTokenizer(ConvTokenizer):
    family = "simvq"

    def make_quantizer(self, cfg: SimVQConfig) -> SimVQAdapter:
        return SimVQAdapter(cfg.codebook_size, cfg.codebook_dim)


@TOKENIZERS.register("simvq-tiny", family="simvq", scale="tiny", description="SimVQ baseline on 16x16 gray (tests)")
def simvq_tiny() -> SimVQConfig:
    return SimVQConfig(**TINY_BACKBONE, codebook_size=64)


@TOKENIZERS.register("simvq-fmnist", family="simvq", scale="small",
                     description="SimVQ, 1024 codes of dim 8, 7x7 tokens on 28x28 Fashion-MNIST")
def simvq_fmnist() -> SimVQConfig:
    return SimVQConfig(**FMNIST_BACKBONE, codebook_size=1024)
