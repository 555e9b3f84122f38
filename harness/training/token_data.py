"""A generator's training data: the frozen tokenizer's indices of a split, encoded once and cached
in the tokenizer's checkpoint folder so every generator trained on that tokenizer reuses them.

The cache is a safetensors file (``indices``, ``labels``): reading it runs no code, unlike a pickle.
Caches of older versions (``tokens-train-*.pt``) are ignored and the split is encoded again."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.core.distributed import Dist, all_true, barrier
from harness.core.errors import VQBenchError, error_text
from harness.core.io import write_atomic
from harness.data.datasets import open_dataset


def read_token_cache(cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of a cache file, checked: two integer tensors with one row per image."""
    fix = "delete it and the split is encoded again"
    try:
        data = load_file(cache)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise VQBenchError(f"token cache {cache} is unreadable or corrupt ({error_text(e)}); {fix}") from None
    indices, labels = data.get("indices"), data.get("labels")
    integer = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if (set(data) != {"indices", "labels"} or indices.dtype not in integer or indices.dim() < 2
            or labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(indices)):
        raise VQBenchError(f"token cache {cache} does not hold N x T integer indices and N labels; {fix}")
    return indices, labels


@torch.no_grad()
def tokenize_split(tokenizer, dataset: str, split: str, n: int | None, cache: Path | None,
                   d: Dist, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of a split, encoded once; rank 0 writes the cache, the others read it."""
    # every rank takes the same branch: one that looked after rank 0 had written the cache would
    # otherwise skip the barrier rank 0 waits at
    if cache is not None and all_true(cache.exists(), d):
        return _in_range(read_token_cache(cache), tokenizer, cache)
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
            tensors = {"indices": indices.contiguous(), "labels": labels.contiguous()}
            write_atomic(cache, lambda p: save_file(tensors, str(p)))
    barrier(d)
    if not d.is_main and cache is not None:
        indices, labels = _in_range(read_token_cache(cache), tokenizer, cache)
    return indices, labels


def _in_range(data: tuple[torch.Tensor, torch.Tensor], tokenizer, cache: Path):
    """The cache's tensors, refused when an index lies outside the tokenizer's codebooks."""
    size = getattr(getattr(tokenizer, "layout", None), "max_codebook_size", None)
    indices = data[0]
    if size is not None and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise VQBenchError(f"token cache {cache} holds indices outside 0..{size - 1}; delete it and the "
                           "split is encoded again")
    return data


def token_cache(tokenizer_checkpoint: Path, dataset: str, n: int | None) -> Path:
    """Where a tokenizer checkpoint's encoding of a training split is cached: in the tokenizer's run
    folder, so every generator trained on that tokenizer reuses it."""
    key = hashlib.sha256(f"{dataset}|{n}".encode()).hexdigest()[:12]
    return Path(tokenizer_checkpoint) / f"tokens-train-{key}.safetensors"


def num_classes_of(dataset: str) -> int:
    classes = open_dataset(dataset, "train", n=1).num_classes
    if not classes:
        raise VQBenchError(f"dataset {dataset!r} does not declare its number of classes; "
                           "class-conditional generators need labelled data")
    return int(classes)
