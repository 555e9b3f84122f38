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

PositionKind = Literal["spatial", "channel", "latent"]


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
    """A discrete image tokenizer. Subclasses set ``layout`` and implement the four methods."""
    layout: TokenLayout
    family: ClassVar[str] = "?"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        raise NotImplementedError

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        """N x T x D embeddings of the given codes (what linear probes pool)."""
        raise NotImplementedError

    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's output weight: the VQGAN adaptive GAN weight balances gradients here."""
        raise NotImplementedError


class Generator(nn.Module):
    """A token generator over a tokenizer's layout (contract; implementations come with issue 5)."""

    def loss(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, cond: torch.Tensor | None, *, generator: torch.Generator | None = None,
               cfg: float = 1.0) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class EvalBatch:
    """Everything a metric may read for one batch; fields a run does not produce stay None."""
    real: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    layout: TokenLayout | None = None


class Metric:
    """A streaming metric: ``reset``, ``update(batch)`` per batch, ``compute() -> {name: value}``.

    State lives in float64/int64 tensors declared with ``add_state``; ``compute`` first sums them over
    DDP ranks, so a sharded evaluation gives the single-process result.
    """
    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()   # EvalBatch fields that must be present
    higher_is_better: ClassVar[dict[str, bool]] = {}   # per emitted value name
    protocol: ClassVar[str] = "canonical"

    def __init__(self):
        self._states: dict[str, torch.Tensor] = {}
        self._defaults: dict[str, torch.Tensor] = {}

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

    def reset(self) -> None:
        self._states = {k: v.clone() for k, v in self._defaults.items()}

    def update(self, batch: EvalBatch) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Sum every state over the process group (no-op in one process)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL reduces only CUDA tensors; states live on the CPU so every rank agrees on them
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            for k, v in self._states.items():
                t = v.to(device) if device is not None else v.clone()
                dist.all_reduce(t)
                self._states[k] = t.to(v.device)

    def compute(self) -> dict[str, float]:
        raise NotImplementedError
