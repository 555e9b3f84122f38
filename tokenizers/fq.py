"""FQGAN: factorized quantization with k sub-codebooks ("Factorized Visual Tokenization and Generation",
Bai et al., Sec. 3.2).

A shared VQGAN encoder feeds k adapters; each adapter's output is quantized against its own
sub-codebook (LlamaGen-style: l2-normalized codes of dim 8), and the k quantized features are
concatenated along channels into the decoder. Every position therefore holds k codes (indices
N x T x k). Two regularizers:
- disentanglement (eq. 7): the squared dot product of the l2-normalized sub-codes of each patch,
  averaged over patches and summed over pairs, weight ``lambda1`` = 0.1 (with the sub-codebooks in
  harness.models.quantizers.factorized);
- representation learning (eq. 8): the last sub-codebooks predict frozen teachers' features
  through small prediction heads, weight ``lambda2`` = 0.5. ``teacher`` lists them comma-separated,
  in the order of the sub-codebooks they supervise, the last ones: Dual's sub-codebook 2 learns from
  CLIP (Sec. 3.2.2), Triple's sub-codebook 2 from DINOv2 and sub-codebook 3 from CLIP (Sec. 4.4,
  App. C; the checkpoints facebook/dinov2-small and openai/clip-vit-base-patch16), so the paper's
  Triple is ``teacher=dinov2:<folder>,clip:<open_clip model>:<weights file>`` (weights you provide);
  the packaged ``vgg16``, ``alexnet``, ``inception-map`` and ``efficientnet-lite0`` need none; or
  ``none``. The loss is 1 - cosine similarity per position (the text does not give its form).

The ImageNet presets carry the paper's tokenizer recipe (Sec. 4.1, App. B; what it leaves to
LlamaGen's schedule is marked assumed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.models.conv_tokenizer import ConvBackbone
from harness.models.nn import ResnetBlock, crop_to, encoder_decoder, latent_side
from harness.models.quantizers.factorized import FactorizedQuantizer
from harness.core.registry import FEATURE_EXTRACTORS, TOKENIZERS
from harness.models.paper_recipes import FQGAN_TOKENIZER
from harness.models.teachers import build_teacher


@dataclass(frozen=True)
class FQConfig(ConvBackbone):
    num_factors: int = 2
    codebook_size: int = 16384            # per sub-codebook, of dimension codebook_dim
    l2_norm: bool = True
    beta: float = 0.25
    disentangle_weight: float = 0.1       # lambda1
    representation_weight: float = 0.5   # lambda2
    teacher: str = "vgg16"                # a FEATURE_EXTRACTORS name (clip:<model>:<file>, dinov2:<folder>), or "none"

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
        # "quantizers" (plural): its sub-codebooks keep the parameter names quantizers.<i>.embedding.weight
        self.quantizers = FactorizedQuantizer(cfg.num_factors, cfg.codebook_size, cfg.codebook_dim, cfg.beta,
                                              cfg.l2_norm, cfg.disentangle_weight)
        self.post_quant_proj = nn.Conv2d(cfg.num_factors * cfg.codebook_dim, cfg.z_channels, 1)
        side = latent_side(cfg.resolution, cfg.ch_mult, cfg.downsample_padding)
        self.grid = (side, side)
        self.layout = TokenLayout.constant(side * side, cfg.codebook_size, num_factors=cfg.num_factors,
                                           position_kind="spatial", grid=self.grid)
        # teachers, comma-separated, supervise the last sub-codebooks in order (Triple, App. C:
        # dinov2:...,clip:... for sub-codebooks 2 and 3); they are built lazily and kept out of the state dict (frozen, never trained)
        self.teacher_specs = [t for t in cfg.teacher.split(",") if t and t != "none"] \
            if cfg.representation_weight > 0 else []
        if len(self.teacher_specs) > cfg.num_factors:
            raise ValueError(f"{len(self.teacher_specs)} teachers for {cfg.num_factors} sub-codebooks")
        self._teachers: dict[int, nn.Module] = {}
        dims = []
        for i, spec in enumerate(self.teacher_specs):
            entry = FEATURE_EXTRACTORS.entry(spec.partition(":")[0])
            # packaged teachers declare their width; user-supplied ones are loaded to read it
            dims.append(entry.meta.get("dim") or self.teacher(i, torch.device("cpu")).dim)
        self.rep_heads = nn.ModuleList([
            nn.Sequential(nn.Conv2d(cfg.codebook_dim, cfg.z_channels, 1), nn.GELU(), nn.Conv2d(cfg.z_channels, d, 1))
            for d in dims])

    def teacher(self, i: int, device) -> nn.Module:
        if i not in self._teachers:
            self._teachers[i] = build_teacher(self.teacher_specs[i])
        return self._teachers[i].to(device)

    def _quantize(self, x: torch.Tensor):
        h = self.encoder(x)
        z = torch.stack([a(h) for a in self.adapters], dim=1)          # N x k x D x h x w
        return self.quantizers(z.permute(0, 3, 4, 1, 2))                # N x h x w x k x D

    def _decode_grid(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: N x h x w x k x D, the k sub-codes of a position concatenated into the decoder."""
        z = z_q.flatten(-2).permute(0, 3, 1, 2)
        return crop_to(self.decoder(self.post_quant_proj(z)), (self.cfg.resolution, self.cfg.resolution))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantize(x).indices.flatten(1, 2)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode_prefix(indices, self.cfg.num_factors)

    prefix_unit = "factors"

    def decode_prefix(self, indices: torch.Tensor, k: int) -> torch.Tensor:
        """Keep the first k sub-codebooks at every position; the later factors' codes are zeroed."""
        k = self.check_prefix(k)
        z_q = self.quantizers.lookup(indices.view(indices.shape[0], *self.grid, -1))
        z_q[..., k:, :] = 0
        return self._decode_grid(z_q)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self._quantize(x)
        losses = dict(q.losses)                          # per sub-codebook, and the disentanglement term
        if self.rep_heads and self.training:
            first = self.cfg.num_factors - len(self.rep_heads)
            rep = 0.0
            for i, head in enumerate(self.rep_heads):
                # contiguous NCHW, as the heads always saw it (conv kernels round differently per layout)
                pred = head(q.quantized[..., first + i, :].permute(0, 3, 1, 2).contiguous())
                target = F.adaptive_avg_pool2d(self.teacher(i, x.device)(x), pred.shape[-2:])
                rep = rep + (1 - F.cosine_similarity(pred, target, dim=1)).mean()
            losses["representation"] = self.cfg.representation_weight * rep
        return TokenizerOutput(self._decode_grid(q.quantized), q.indices.flatten(1, 2), losses)

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizers.lookup(indices).flatten(-2)

    def factor_code_embeddings(self, indices: torch.Tensor, factor: int) -> torch.Tensor:
        """N x T x D: the codes of sub-codebook ``factor`` alone (probes of one sub-codebook)."""
        return self.quantizers.sub_codebooks()[factor].lookup(indices[..., factor])

    def last_layer_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


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


@TOKENIZERS.register("fqgan-dual-imagenet", family="fq", scale="paper", recipe=FQGAN_TOKENIZER,
                     description="FQGAN-Dual: 16x16 positions x 2 sub-codes at 256x256, K=16384 x 2, dim 8")
def fqgan_dual_imagenet() -> FQConfig:
    return FQConfig(num_factors=2)


@TOKENIZERS.register("fqgan-triple-imagenet", family="fq", scale="paper", recipe=FQGAN_TOKENIZER,
                     description="FQGAN-Triple: 16x16 positions x 3 sub-codes at 256x256, K=16384 x 3, dim 8")
def fqgan_triple_imagenet() -> FQConfig:
    # the paper's DINOv2 (sub-codebook 2) and CLIP (sub-codebook 3) need your weights (--set
    # teacher=dinov2:...,clip:...); packaged stand-ins in their places: VGG16 for DINOv2, EfficientNet for CLIP
    return FQConfig(num_factors=3, teacher="vgg16,efficientnet-lite0")
