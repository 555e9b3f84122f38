"""The contracts every tokenizer, generator and metric implements.

Images enter and leave as float tensors in [-1, 1], shape N x C x H x W. Token indices are int64 of
shape ``(N, *layout.index_shape)``: ``(N, T)`` when each position holds one code, ``(N, T, k)`` when it
holds k factor codes (FQGAN). Generators and token metrics read only the ``TokenLayout``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from harness.core.distributed import is_multi_process
from harness.core.errors import VQBenchError
from harness.core.registry import check_generator_layout

PositionKind = Literal["spatial", "channel", "latent"]
PrefixUnit = Literal["positions", "channels", "factors"]


@dataclass(frozen=True)
class TokenLayout:
    """What a tokenizer's indices mean."""
    num_positions: int                     # T
    codebook_sizes: tuple[int, ...]        # K_t for t = 0..T-1 (constant for VQ/CVQ, growing for VCQ)
    num_factors: int = 1                   # k sub-codes per position (FQGAN)
    position_kind: PositionKind = "spatial"
    grid: tuple[int, int] | None = None    # (h, w) for spatial layouts, raster order

    @classmethod
    def constant(cls, num_positions: int, codebook_size: int, **kw) -> "TokenLayout":
        return cls(num_positions, (codebook_size,) * num_positions, **kw)

    def __post_init__(self):
        if len(self.codebook_sizes) != self.num_positions:
            raise ValueError(f"codebook_sizes has {len(self.codebook_sizes)} entries, "
                             f"expected one per position ({self.num_positions})")

    @property
    def index_shape(self) -> tuple[int, ...]:
        return (self.num_positions,) if self.num_factors == 1 else (self.num_positions, self.num_factors)

    @property
    def max_codebook_size(self) -> int:
        return max(self.codebook_sizes)

    @property
    def bits_per_image(self) -> float:
        import math
        return self.num_factors * sum(math.log2(k) for k in self.codebook_sizes)


@dataclass
class TokenizerOutput:
    """What ``Tokenizer.forward`` returns in training and evaluation alike."""
    reconstruction: torch.Tensor                          # N x C x H x W in [-1, 1] (not clamped)
    indices: torch.Tensor                                 # N x *layout.index_shape
    losses: dict[str, torch.Tensor] = field(default_factory=dict)   # weighted, summed by the trainer
    logs: dict[str, float] = field(default_factory=dict)            # scalars for progress/TensorBoard
    gan_weight_scale: float = 1.0   # per-batch factor on the adversarial weight (CVQ's adaptive weight)


class Tokenizer(nn.Module):
    """A discrete image tokenizer. Subclasses set ``layout`` and implement the four methods; the images
    it takes are ``in_channels`` x ``resolution`` x ``resolution`` (by default its config's fields)."""
    layout: TokenLayout
    family: ClassVar[str] = "?"

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @property
    def in_channels(self) -> int:
        return self.cfg.in_channels

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        raise NotImplementedError

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        """N x T x D embeddings of the given codes (what linear probes pool)."""
        raise NotImplementedError

    # What "the first k tokens" of ``decode_prefix`` counts: latent/raster positions (VQ, VCQ, the
    # conv baselines; RVQ keeps every residual level of a kept position), channels (CVQ), or
    # sub-codebooks (FQ, where k runs over the factors of every position).
    prefix_unit: ClassVar[PrefixUnit] = "positions"

    @property
    def prefix_total(self) -> int:
        """The k of ``decode_prefix`` that keeps every token."""
        return self.layout.num_factors if self.prefix_unit == "factors" else self.layout.num_positions

    def decode_prefix(self, indices: torch.Tensor, k: int) -> torch.Tensor:
        """Progressive decoding: keep the first ``k`` tokens (``prefix_unit``), zero the rest, decode.

        Zeroing happens in the quantized latent space: the dropped tokens' code vectors are set to 0
        before the decoder (as CVQ's nested dropout trains). ``k`` runs from 1 to ``prefix_total``;
        ``decode_prefix(indices, prefix_total)`` equals ``decode(indices)``.
        """
        raise NotImplementedError

    def check_prefix(self, k: int) -> int:
        """``k`` if it is a valid prefix length for ``decode_prefix``, else ValueError."""
        if not 1 <= int(k) <= self.prefix_total:
            raise ValueError(f"prefix length k={k} is outside 1..{self.prefix_total} ({self.prefix_unit})")
        return int(k)

    def quantizer_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors (M x code dim) the quantizer matches for images ``x``: what a codebook initialised
        from data (``codebook_init="data"``) starts from. Optional: tokenizers without it cannot
        take that setting."""
        raise NotImplementedError(f"{type(self).__name__} has no data-initialised codebook")

    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's output weight: the VQGAN adaptive GAN weight balances gradients here."""
        raise NotImplementedError


@dataclass(frozen=True)
class Conditioning:
    """What a generator is conditioned on. ``class``: int64 labels 0..num_classes-1, and the extra label
    ``num_classes`` is the null condition (classifier-free guidance, condition dropout). ``text``: float
    embeddings N x L x text_dim (or N x text_dim); an all-zero embedding is the null condition."""
    kind: Literal["class", "text", "none"] = "class"
    num_classes: int = 0
    text_dim: int = 0

    @property
    def null_label(self) -> int:
        return self.num_classes


@dataclass(frozen=True)
class SamplerConfig:
    """Every sampler setting a generation result depends on (recorded in each result row).

    CFG mixes logits as ``l_u + w (l_c - l_u)`` (w = 1: no guidance); the masked-generation paper's
    ``t l_c - (t - 1) l_u`` is the same with t = w. ``cfg_schedule`` varies w over the positions
    (or decoding steps): constant, linear ramp from 1 to w, or the cosine schedule with ``cfg_power``
    of the VCQ appendix. ``codebook_aware_cfg`` scales w per position by the codebook's excess
    capacity (VCQ paper Sec. 3, Eq. 4; harness.models.sampling) and reduces to ordinary CFG for a
    constant codebook.
    """
    temperature: float = 1.0
    top_k: int = 0                   # 0: no top-k filtering
    top_p: float = 1.0               # 1: no nucleus filtering
    cfg_scale: float = 1.0
    cfg_schedule: Literal["constant", "linear", "cosine"] = "constant"
    cfg_power: float = 1.0
    codebook_aware_cfg: bool = False
    steps: int = 0                   # iterative decoding steps of masked generators; 0: the preset's default
    kv_cache: bool = True            # autoregressive generators: cached attention (same samples, faster)

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


class Generator(nn.Module):
    """A token generator over a tokenizer's ``TokenLayout``.

    Built by a registered config's ``build(layout, conditioning, codebook=None)``; ``codebook`` (K x D
    code vectors of the paired tokenizer) is passed only to generators whose inputs are code
    embeddings (CAR). ``sample`` returns int64 indices of shape ``(n, *layout.index_shape)``, valid for
    the layout (at position t, < K_t), and is reproducible for a seeded ``generator``.

    Subclasses set ``family`` to the family their presets register, call ``super().__init__(layout)``
    (which rejects a layout kind the family's ``GeneratorInfo.layouts`` does not declare) and implement
    ``_predict`` (the training logits and the codes they score) and ``_sample``; ``cond_embed``
    (harness.models.conditioning.ConditionEmbedder) validates and drops conditions.
    """
    layout: TokenLayout
    conditioning: Conditioning
    cond_embed: nn.Module
    family: ClassVar[str] = "?"

    def __init__(self, layout: TokenLayout):
        super().__init__()
        check_generator_layout(self.family, layout)

    def loss(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Mean cross-entropy of the predicted codes; in train mode each condition is replaced by the
        null one with the preset's ``class_dropout`` probability (what CFG needs at sampling time)."""
        self._check_indices(indices)
        cond = self.cond_embed.check(cond, indices.shape[0], indices.device)
        if self.training:
            cond = self.cond_embed.drop(cond)
        logits, targets = self._predict(indices, cond)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def _predict(self, indices: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ... x V, target codes ...) for a validated condition, condition dropout already applied."""
        raise NotImplementedError

    def _check_indices(self, indices: torch.Tensor) -> None:
        if indices.shape[1:] != self.layout.index_shape:
            raise VQBenchError(f"indices of shape {tuple(indices.shape)} do not match the layout "
                               f"(N, {', '.join(map(str, self.layout.index_shape))})")

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The training loss: DDP synchronizes gradients only through ``forward``."""
        return self.loss(indices, cond)

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None, *, sampler: SamplerConfig = SamplerConfig(),
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples in eval mode (no dropout), restoring the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            return self._sample(n, cond, sampler, generator)
        finally:
            self.train(was_training)

    def _sample(self, n: int, cond: torch.Tensor | None, sampler: SamplerConfig,
                generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class EvalBatch:
    """Everything a metric may read for one batch; fields a run does not produce stay None."""
    real: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    samples: torch.Tensor | None = None          # generated images (generation metrics)
    indices: torch.Tensor | None = None
    code_embeddings: torch.Tensor | None = None   # N x T x D code vectors of ``indices`` (Tokenizer.code_embeddings)
    labels: torch.Tensor | None = None
    layout: TokenLayout | None = None
    image_ids: torch.Tensor | None = None      # each image's row in the split: orders gathered DDP results
    dataset: dict | None = None                # the split's ``ImageDataset.describe()`` (feature cache key)
    feature_memo: dict = field(default_factory=dict)   # features computed once per batch, shared by metrics


class Metric:
    """A streaming metric: ``reset``, ``update(batch)`` per batch, ``compute() -> {name: value}``.

    State lives in float64/int64 tensors declared with ``add_state``; ``compute`` first sums them over
    DDP ranks, so a sharded evaluation gives the single-process result.
    """
    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()   # EvalBatch fields that must be present
    higher_is_better: ClassVar[dict[str, bool]] = {}   # per emitted value name
    protocol: ClassVar[str] = "canonical"
    feature_extractor: ClassVar[str] = ""              # the FEATURE_EXTRACTORS name the values rest on
    uses_protocol: ClassVar[bool] = False              # its values follow the evaluation protocol (set_protocol)

    def __init__(self):
        self._states: dict[str, torch.Tensor] = {}
        self._defaults: dict[str, torch.Tensor] = {}
        self.reasons: dict[str, str] = {}   # value name -> why ``compute`` returned NaN for it
        self.value_extra: dict[str, dict] = {}   # value name -> facts its row records in ``extra`` (set by compute)

    def add_state(self, name: str, default: torch.Tensor) -> None:
        self._defaults[name] = default.clone()
        self._states[name] = default.clone()

    def __getattr__(self, name):
        states = self.__dict__.get("_states")
        if states is not None and name in states:
            return states[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        states = self.__dict__.get("_states")
        if states is not None and name in states:
            states[name] = value
        else:
            object.__setattr__(self, name, value)

    @classmethod
    def outputs(cls, layout: TokenLayout | None) -> tuple[str, ...]:
        """The value names ``compute`` returns on runs of this token layout (what a pipeline expects)."""
        return tuple(cls.higher_is_better)

    def set_protocol(self, protocol) -> None:
        """Metrics with ``uses_protocol``: compute under evaluation ``protocol``
        (harness.evaluation.protocols.FidelityProtocol) and tag the rows with its name."""
        raise NotImplementedError(f"{type(self).__name__} does not follow an evaluation protocol")

    @classmethod
    def protocol_outputs(cls, protocol) -> tuple[str, ...]:
        """Metrics with ``uses_protocol``: the value names ``compute`` returns under ``protocol``."""
        return tuple(cls.higher_is_better)

    def reset(self) -> None:
        self._states = {k: v.clone() for k, v in self._defaults.items()}
        self.reasons, self.value_extra = {}, {}

    def update(self, batch: EvalBatch) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Sum every state over the process group (no-op in one process)."""
        if is_multi_process():
            # NCCL reduces only CUDA tensors; states live on the CPU so every rank agrees on them
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            for k, v in self._states.items():
                t = v.to(device) if device is not None else v.clone()
                dist.all_reduce(t)
                self._states[k] = t.to(v.device)

    def compute(self) -> dict[str, float]:
        raise NotImplementedError
