"""Baseline quantizers as thin adapters over vector-quantize-pytorch (lucidrains), on the conv
tokenizer backbone of harness.models.conv_tokenizer, so they train and evaluate exactly like VQ:

- FSQ (Mentzer et al., 2024): per-dimension rounding to fixed levels, implicit codebook prod(levels).
- LFQ (Yu et al., MAGVIT-v2, 2024): sign quantization of log2 K dims, with its entropy loss.
- SimVQ (Zhu et al., 2024): codes = a learned linear map of a frozen random basis.
- Residual VQ (Lee et al., RQ-VAE, 2022): ``depth`` codes per position, each quantizing the residual
  of the previous ones; the layout has ``num_factors = depth``.

Each adapter returns harness.models.quantize.QuantizerOutput and exposes ``lookup(indices)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.models.conv_tokenizer import ConvBackbone, ConvTokenizer
from harness.core.errors import MissingWeightsError
from harness.models.quantize import QuantizerOutput
from harness.core.registry import TOKENIZERS


def _vqp():
    try:
        import vector_quantize_pytorch
    except ImportError:
        raise MissingWeightsError("the FSQ/LFQ/SimVQ/RVQ baselines need the PyPI package "
                                  "'vector-quantize-pytorch' (pip install vector-quantize-pytorch, or run "
                                  "`bash scripts/setup.sh`)") from None
    return vector_quantize_pytorch


def _as_sequence(z: torch.Tensor) -> torch.Tensor:
    """N x h x w x D -> N x (h*w) x D: the library reads 4-D inputs as channel-first images."""
    return z.reshape(z.shape[0], -1, z.shape[-1])


def _as_grid(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Undo _as_sequence for outputs (N x L [x ...]) given the N x h x w x D input."""
    return t.reshape(*like.shape[:3], *t.shape[2:])


class _Adapter(nn.Module):
    def output(self, q, idx, losses, z) -> QuantizerOutput:
        q, idx = _as_grid(q, z), _as_grid(idx, z).long()
        if not z.requires_grad:     # no graph: return the codes themselves, as decode(indices) sees them
            q = self.lookup(idx)
        return QuantizerOutput(q, idx, losses)


class FSQAdapter(_Adapter):
    def __init__(self, levels: tuple[int, ...], dim: int):
        super().__init__()
        self.fsq = _vqp().FSQ(levels=list(levels), dim=dim)
        self.codebook_size = math.prod(levels)

    def forward(self, z):
        q, idx = self.fsq(_as_sequence(z))
        return self.output(q, idx, {}, z)

    def lookup(self, idx):
        seq = idx.reshape(idx.shape[0], -1, *idx.shape[3:])
        return self.fsq.indices_to_codes(seq).reshape(*idx.shape[:3], -1)


class LFQAdapter(_Adapter):
    def __init__(self, codebook_size: int, dim: int, entropy_weight: float, commitment_weight: float):
        super().__init__()
        self.lfq = _vqp().LFQ(dim=dim, codebook_size=codebook_size, entropy_loss_weight=entropy_weight,
                              commitment_loss_weight=commitment_weight)
        self.codebook_size = codebook_size

    def forward(self, z):
        q, idx, aux = self.lfq(_as_sequence(z))
        return self.output(q, idx, {"lfq_entropy_commit": aux}, z)

    def lookup(self, idx):
        seq = idx.reshape(idx.shape[0], -1, *idx.shape[3:])
        return self.lfq.indices_to_codes(seq).reshape(*idx.shape[:3], -1)


class SimVQAdapter(_Adapter):
    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.simvq = _vqp().SimVQ(dim=dim, codebook_size=codebook_size)
        self.codebook_size = codebook_size

    def forward(self, z):
        q, idx, loss = self.simvq(_as_sequence(z))
        return self.output(q, idx, {"simvq_commit": loss}, z)

    def lookup(self, idx):
        seq = idx.reshape(idx.shape[0], -1, *idx.shape[3:])
        return self.simvq.indices_to_codes(seq).reshape(*idx.shape[:3], -1)


class ResidualAdapter(_Adapter):
    def __init__(self, codebook_size: int, dim: int, depth: int):
        super().__init__()
        self.rvq = _vqp().ResidualVQ(dim=dim, num_quantizers=depth, codebook_size=codebook_size)
        self.codebook_size, self.num_factors = codebook_size, depth

    def forward(self, z):
        q, idx, commit = self.rvq(_as_sequence(z))
        return self.output(q, idx, {"rvq_commit": commit.sum()}, z)

    def lookup(self, idx):
        seq = idx.reshape(idx.shape[0], -1, *idx.shape[3:])
        return self.rvq.get_output_from_indices(seq).reshape(*idx.shape[:3], -1)


@dataclass(frozen=True)
class BaselineConfig(ConvBackbone):
    quantizer: str = "fsq"                       # fsq | lfq | simvq | rvq
    codebook_size: int = 1024                    # lfq/simvq/rvq (per level for rvq)
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)   # FSQ's recommended 1000-code levels
    lfq_entropy_weight: float = 0.1
    lfq_commitment_weight: float = 0.25
    rvq_depth: int = 2

    def build(self) -> "BaselineTokenizer":
        return BaselineTokenizer(self)


class BaselineTokenizer(ConvTokenizer):
    family = "baseline"

    def __init__(self, cfg: BaselineConfig):
        super().__init__(cfg)
        self.family = cfg.quantizer           # results rows name the quantizer, not "baseline"

    def make_quantizer(self, cfg: BaselineConfig) -> nn.Module:
        if cfg.quantizer == "fsq":
            return FSQAdapter(cfg.fsq_levels, cfg.codebook_dim)
        if cfg.quantizer == "lfq":
            return LFQAdapter(cfg.codebook_size, cfg.codebook_dim, cfg.lfq_entropy_weight, cfg.lfq_commitment_weight)
        if cfg.quantizer == "simvq":
            return SimVQAdapter(cfg.codebook_size, cfg.codebook_dim)
        if cfg.quantizer == "rvq":
            return ResidualAdapter(cfg.codebook_size, cfg.codebook_dim, cfg.rvq_depth)
        raise ValueError(f"unknown baseline quantizer {cfg.quantizer!r} (fsq, lfq, simvq, rvq)")


TINY = dict(resolution=16, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=16,
            norm_groups=8, attention=False)
FMNIST = dict(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=64,
              norm_groups=16, attention=False)
# name -> (tiny settings, fmnist settings, description); fmnist variants match vq-fmnist's ~1024 codes
VARIANTS = {
    "fsq": (dict(quantizer="fsq", fsq_levels=(4, 4, 4), codebook_dim=3),
            dict(quantizer="fsq", fsq_levels=(8, 5, 5, 5), codebook_dim=4), "FSQ levels 8-5-5-5 (1000 codes)"),
    "lfq": (dict(quantizer="lfq", codebook_size=64, codebook_dim=6),
            dict(quantizer="lfq", codebook_size=1024, codebook_dim=10), "LFQ, 10 bits (1024 codes) + entropy loss"),
    "simvq": (dict(quantizer="simvq", codebook_size=64),
              dict(quantizer="simvq", codebook_size=1024), "SimVQ, 1024 codes of dim 8"),
    "rvq": (dict(quantizer="rvq", codebook_size=64, rvq_depth=2),
            dict(quantizer="rvq", codebook_size=1024, rvq_depth=2), "residual VQ, depth 2 x 1024 codes"),
}
for _name, (_tiny, _fmnist, _what) in VARIANTS.items():
    TOKENIZERS.add(f"{_name}-tiny", lambda s=_tiny: BaselineConfig(**TINY, **s), family=_name, scale="tiny",
                   description=f"{_name.upper()} baseline on 16x16 gray (tests)")
    TOKENIZERS.add(f"{_name}-fmnist", lambda s=_fmnist: BaselineConfig(**FMNIST, **s), family=_name,
                   scale="small", description=f"{_what}, 7x7 tokens on 28x28 Fashion-MNIST")
