"""Class-balanced sampling: generator -> token indices -> images, with every setting recorded.

``n`` samples get the labels ``i mod num_classes`` (equal counts per class when ``num_classes``
divides ``n``). Samples are drawn in fixed batches, batch b with its own ``torch.Generator`` seeded
by ``(seed, b)``, and batches are dealt to DDP ranks whole: the images are the same whatever the
number of processes. Samples can be saved as an ADM-format ``.npz`` (``arr_0``: N x H x W x 3
uint8, ``arr_1``: labels) for external evaluators (the ADM/guided-diffusion evaluator, torch-fidelity).
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from harness.core.contracts import Generator, SamplerConfig, Tokenizer
from harness.core.distributed import Dist, shard_batches
from harness.core.io import write_atomic


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    return torch.arange(n) % num_classes


def batch_seed(seed: int, batch: int) -> int:
    return seed * 1_000_003 + batch


@torch.no_grad()
def sample_batches(generator: Generator, tokenizer: Tokenizer, n: int, num_classes: int,
                   sampler: SamplerConfig, *, seed: int, batch_size: int, d: Dist
                   ) -> Iterator[tuple[range, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield this rank's ``(rows, indices, images in [-1, 1], labels)`` batches."""
    labels = balanced_labels(n, num_classes)
    for rows in shard_batches(n, batch_size, d):
        b = rows.start // batch_size
        g = torch.Generator(device=d.device).manual_seed(batch_seed(seed, b))
        y = labels[rows.start:rows.stop].to(d.device)
        idx = generator.sample(len(rows), y, sampler=sampler, generator=g)
        images = tokenizer.decode(idx).clamp(-1, 1)
        yield rows, idx.cpu(), images, y.cpu()


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] N x C x H x W -> N x H x W x 3 uint8 (gray repeated), as image files store them."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_adm_npz(path: Path, images_hwc: np.ndarray, labels: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, arr_0=images_hwc, arr_1=labels)
    write_atomic(path, buf.getvalue())


def sampler_record(sampler: SamplerConfig, seed: int, n: int, num_classes: int) -> dict:
    """The sampler columns of a generation result row (``extra``)."""
    return {"sampler": dataclasses.asdict(sampler), "sample_seed": seed, "n_samples": n,
            "class_balanced": True, "samples_per_class": n / num_classes}
