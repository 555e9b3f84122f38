"""A generator's training data: the frozen tokenizer's indices of a split, encoded once and cached
in the tokenizer's checkpoint folder so every generator trained on that tokenizer reuses them."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from harness.core.distributed import Dist, barrier
from harness.core.errors import VQBenchError
from harness.core.io import write_atomic
from harness.data.datasets import open_dataset


@torch.no_grad()
def tokenize_split(tokenizer, dataset: str, split: str, n: int | None, cache: Path | None,
                   d: Dist, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of a split, encoded once; rank 0 writes the cache, the others read it."""
    if cache is not None and cache.exists():
        data = torch.load(cache, map_location="cpu")
        return data["indices"], data["labels"]
    if d.is_main or cache is None:
        ds = open_dataset(dataset, split, resolution=tokenizer.resolution, channels=tokenizer.in_channels, n=n)
        device = next(tokenizer.parameters()).device
        parts, labels = [], []
        for start in range(0, len(ds), batch_size):
            x, y = ds.batch(torch.arange(start, min(start + batch_size, len(ds))))
            parts.append(tokenizer.encode(x.to(device)).cpu())
            labels.append(y)
        indices, labels = torch.cat(parts), torch.cat(labels).long()
        if cache is not None:
            write_atomic(cache, lambda p: torch.save({"indices": indices, "labels": labels}, p))
    barrier(d)
    if not d.is_main and cache is not None:
        data = torch.load(cache, map_location="cpu")
        indices, labels = data["indices"], data["labels"]
    return indices, labels


def token_cache(tokenizer_checkpoint: Path, dataset: str, n: int | None) -> Path:
    """Where a tokenizer checkpoint's encoding of a training split is cached: in the tokenizer's run
    folder, so every generator trained on that tokenizer reuses it."""
    key = hashlib.sha256(f"{dataset}|{n}".encode()).hexdigest()[:12]
    return Path(tokenizer_checkpoint) / f"tokens-train-{key}.pt"


def num_classes_of(dataset: str) -> int:
    classes = open_dataset(dataset, "train", n=1).num_classes
    if not classes:
        raise VQBenchError(f"dataset {dataset!r} does not declare its number of classes; "
                           "class-conditional generators need labelled data")
    return int(classes)
