"""Generator support shared by every generator family: the condition embedder (class, text, none)
with training-time condition dropout, the ImageNet class conditioning of the paper presets, and the
layout kinds of a one-code-per-position generator (what its presets declare in ``GeneratorInfo.layouts``)."""
from __future__ import annotations

import torch
from torch import nn

from harness.core.contracts import Conditioning
from harness.core.errors import VQBenchError

IMAGENET_CLASSES = Conditioning(kind="class", num_classes=1000)
ONE_FACTOR_LAYOUTS = ("spatial", "channel", "latent")


class ConditionEmbedder(nn.Module):
    """Condition -> prefix tokens (N x P x width), with training-time condition dropout.

    ``class``: LlamaGen's label embedding (num_classes + 1 rows; the last is the null class).
    ``text``: LlamaGen's caption MLP (Linear, GELU-tanh, Linear) over the text embeddings; dropped or null
    conditions are all-zero embeddings (the ``Conditioning`` contract). ``none``: one learned start token.
    """

    def __init__(self, conditioning: Conditioning, width: int, dropout_prob: float):
        super().__init__()
        self.conditioning, self.dropout_prob = conditioning, dropout_prob
        if conditioning.kind == "class":
            if conditioning.num_classes < 1:
                raise VQBenchError("class conditioning needs num_classes >= 1")
            self.table = nn.Embedding(conditioning.num_classes + 1, width)
        elif conditioning.kind == "text":
            if conditioning.text_dim < 1:
                raise VQBenchError("text conditioning needs text_dim >= 1")
            self.mlp = nn.Sequential(nn.Linear(conditioning.text_dim, width), nn.GELU(approximate="tanh"),
                                     nn.Linear(width, width))
        else:
            self.table = nn.Embedding(1, width)

    def null_condition(self, n: int, device, like: torch.Tensor | None = None) -> torch.Tensor | None:
        c = self.conditioning
        if c.kind == "class":
            return torch.full((n,), c.null_label, dtype=torch.long, device=device)
        if c.kind == "text":
            shape = (n, c.text_dim) if like is None else (n, *like.shape[1:])
            return torch.zeros(shape, device=device)
        return None

    def check(self, cond: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        """Validate a user condition for n samples; None becomes the null condition."""
        c = self.conditioning
        if c.kind == "none":
            return None
        if cond is None:
            return self.null_condition(n, device)
        if cond.shape[0] != n:
            raise VQBenchError(f"cond has {cond.shape[0]} rows for {n} samples")
        if c.kind == "class":
            if cond.dim() != 1 or cond.dtype not in (torch.int64, torch.int32):
                raise VQBenchError(f"class cond must be int64 labels of shape (n,), got {tuple(cond.shape)} "
                                   f"{cond.dtype}")
            if int(cond.min()) < 0 or int(cond.max()) > c.null_label:
                raise VQBenchError(f"class labels must lie in 0..{c.num_classes} ({c.num_classes} = null)")
            return cond.long().to(device)
        if cond.shape[-1] != c.text_dim or cond.dim() not in (2, 3):
            raise VQBenchError(f"text cond must be N x L x {c.text_dim} or N x {c.text_dim}, "
                               f"got {tuple(cond.shape)}")
        return cond.float().to(device)

    def drop(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """Replace each sample's condition by the null one with probability ``dropout_prob``."""
        if cond is None or self.dropout_prob <= 0:
            return cond
        keep = torch.rand(cond.shape[0], device=cond.device) >= self.dropout_prob
        if self.conditioning.kind == "class":
            return torch.where(keep, cond, torch.full_like(cond, self.conditioning.null_label))
        return cond * keep.view(-1, *([1] * (cond.dim() - 1))).to(cond.dtype)

    def sampling_prefix(self, cond: torch.Tensor | None, n: int, guided: bool, device) -> torch.Tensor:
        """Prefix tokens for sampling n images: with guidance, the n conditional rows first and n
        unconditional rows second, so one batched forward gives both logits."""
        cond = self.check(cond, n, device)
        prefix = self(cond, n)
        if guided:
            prefix = torch.cat([prefix, self(self.null_condition(n, device, like=cond), n)], dim=0)
        return prefix

    def forward(self, cond: torch.Tensor | None, n: int) -> torch.Tensor:
        kind = self.conditioning.kind
        if kind == "class":
            return self.table(cond)[:, None]
        if kind == "text":
            out = self.mlp(cond.to(self.mlp[0].weight.dtype))
            return out[:, None] if out.dim() == 2 else out
        return self.table.weight[None].expand(n, 1, -1)
