"""Sampling with recorded conditions: generator -> token indices -> images, with every setting recorded.

What sample i is conditioned on is a ``SampleConditions``: for a class-conditional generator the label
``i mod num_classes`` (equal counts per class when ``num_classes`` divides ``n``); for a
text-conditioned one a prompt per sample, embedded by the encoder the generator was trained with
(``prompted``). Samples are drawn in fixed batches, batch b with its own ``torch.Generator`` seeded
by ``(seed, b)``, and batches are dealt to DDP ranks whole: the images are the same whatever the
number of processes. Samples can be saved as an ADM-format ``.npz`` (``arr_0``: N x H x W x 3
uint8, ``arr_1``: labels) for external evaluators (the ADM/guided-diffusion evaluator, torch-fidelity).
"""
from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.core.contracts import Generator, SamplerConfig, Tokenizer
from harness.core.distributed import Dist, shard_batches
from harness.core.errors import VQBenchError
from harness.core.io import write_atomic
from harness.models.checkpoints import TextCondition

UNKNOWN_CLASS = -1


@dataclass(frozen=True)
class SampleConditions:
    """Per sample: the generator's condition (``cond``: int64 labels, or n x D text embeddings), the
    class it should show (``labels``, ``UNKNOWN_CLASS`` where none is known) and its prompt (text)."""
    cond: torch.Tensor
    labels: torch.Tensor
    prompts: tuple[str, ...] | None
    source: str                      # how the conditions were chosen (recorded in result rows)
    num_classes: int = 0             # class-balanced conditions: the number of classes

    def __len__(self) -> int:
        return len(self.labels)

    def record(self) -> dict:
        """The condition columns of a generation result row (``extra``)."""
        if self.prompts is None:
            return {"conditions": self.source, "class_balanced": True,
                    "samples_per_class": len(self) / self.num_classes}
        return {"conditions": self.source, "distinct_prompts": len(set(self.prompts))}


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    return torch.arange(n) % num_classes


def class_balanced(n: int, num_classes: int) -> SampleConditions:
    labels = balanced_labels(n, num_classes)
    return SampleConditions(labels, labels, None, f"class-balanced labels i mod {num_classes}", num_classes)


@torch.no_grad()
def prompted(prompts: list[str], text: TextCondition, source: str, labels: torch.Tensor | None = None,
             device: torch.device | str = "cpu") -> SampleConditions:
    """Sample i conditioned on ``prompts[i]``, embedded as the generator was trained (``text``: the run's
    ``checkpoints.run_text_condition``)."""
    from harness.models.text_encoders import build_text_encoder, condition_embeddings
    if not prompts:
        raise VQBenchError("no prompts to sample from")
    encoder = build_text_encoder(text.encoder).to(device)
    cond = condition_embeddings(encoder, list(prompts), text.tokens)
    labels = torch.full((len(prompts),), UNKNOWN_CLASS) if labels is None else labels.long()
    return SampleConditions(cond, labels, tuple(prompts), source)


def reference_prompts(dataset: str, split: str, n: int, text: TextCondition,
                      device: torch.device | str = "cpu") -> SampleConditions:
    """The prompts a text-conditioned generator is evaluated on: sample i takes caption ``i mod m_i`` of
    image ``i mod len`` of ``open_dataset(dataset, split, n=n)`` (for n = the number of reference images,
    the evaluation's default, exactly the images its samples are compared with), and that image's class
    where the dataset has classes."""
    from harness.data.datasets import open_dataset
    ds = open_dataset(dataset, split, n=n)
    if not hasattr(ds, "captions"):
        raise VQBenchError(f"dataset {dataset!r} has no captions: a text-conditioned generator is evaluated on "
                           "the prompts of a captioned dataset (e.g. fashion-mnist-captions, captions:<folder>)")
    images = torch.arange(n) % len(ds)
    prompts = [caps[i % len(caps)] for i, caps in enumerate(ds.captions(images))]
    labels = ds.labels_at(images) if ds.num_classes else None
    return prompted(prompts, text, f"caption i mod its count of {ds.name} {split} image i mod {len(ds)} "
                    "(the reference images)", labels, device)


def batch_seed(seed: int, batch: int) -> int:
    return seed * 1_000_003 + batch


@torch.no_grad()
def sample_batches(generator: Generator, tokenizer: Tokenizer, conditions: SampleConditions,
                   sampler: SamplerConfig, *, seed: int, batch_size: int, d: Dist
                   ) -> Iterator[tuple[range, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield this rank's ``(rows, indices, images in [-1, 1], labels)`` batches."""
    for rows in shard_batches(len(conditions), batch_size, d):
        b = rows.start // batch_size
        g = torch.Generator(device=d.device).manual_seed(batch_seed(seed, b))
        cond = conditions.cond[rows.start:rows.stop].to(d.device)
        idx = generator.sample(len(rows), cond, sampler=sampler, generator=g)
        images = tokenizer.decode(idx).clamp(-1, 1)
        yield rows, idx.cpu(), images, conditions.labels[rows.start:rows.stop]


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] N x C x H x W -> N x H x W x 3 uint8 (gray repeated), as image files store them."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """An .npz written atomically (in memory first: ``np.savez`` would append .npz to a temporary name)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def save_adm_npz(path: Path, images_hwc: np.ndarray, labels: np.ndarray, prompts: tuple[str, ...] | None = None) -> None:
    """``arr_0`` images, ``arr_1`` labels (-1: no class), and each image's prompt (``prompts``) when prompted."""
    extra = {} if prompts is None else {"prompts": np.array(prompts, dtype=str)}
    write_npz(path, arr_0=images_hwc, arr_1=labels, **extra)


def sampler_record(sampler: SamplerConfig, seed: int, conditions: SampleConditions) -> dict:
    """The sampler and condition columns of a generation result row (``extra``)."""
    return {"sampler": dataclasses.asdict(sampler), "sample_seed": seed, "n_samples": len(conditions)
            } | conditions.record()
