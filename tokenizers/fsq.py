"""FSQ tokenizer: finite scalar quantization (Mentzer et al., ICLR 2024; harness.models.quantizers.fsq)
on the conv backbone of harness.models.conv_tokenizer, a baseline that trains and evaluates like VQ.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.registry import TOKENIZERS
from harness.models.conv_tokenizer import FMNIST_BACKBONE, TINY_BACKBONE, ConvBackbone, ConvTokenizer
from harness.models.quantizers.fsq import FSQAdapter


@dataclass(frozen=True)
class FSQConfig(ConvBackbone):
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)   # FSQ's recommended 1000-code levels

    def build(self) -> "FSQTokenizer":
        return FSQTokenizer(self)


class FSQTokenizer(ConvTokenizer):
    family = "fsq"

    def make_quantizer(self, cfg: FSQConfig) -> FSQAdapter:
        return FSQAdapter(cfg.fsq_levels, cfg.codebook_dim)


@TOKENIZERS.register("fsq-tiny", family="fsq", scale="tiny", description="FSQ baseline on 16x16 gray (tests)")
def fsq_tiny() -> FSQConfig:
    return FSQConfig(**TINY_BACKBONE, fsq_levels=(4, 4, 4), codebook_dim=3)


@TOKENIZERS.register("fsq-fmnist", family="fsq", scale="small",
                     description="FSQ levels 8-5-5-5 (1000 codes), 7x7 tokens on 28x28 Fashion-MNIST")
def fsq_fmnist() -> FSQConfig:
    return FSQConfig(**FMNIST_BACKBONE, fsq_levels=(8, 5, 5, 5), codebook_dim=4)
