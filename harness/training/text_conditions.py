"""A text-conditioned generator's training conditions: the captions of a split, embedded once by a frozen
text encoder and cached beside the token cache (in the tokenizer's run folder).

The cache holds each distinct caption's condition once (``embeddings``: the pooled embedding, U x D, or
with ``text_condition=tokens`` the per-token states, U x L x D with zero padding, L the longest caption's
token count) and, per image, its captions as rows of that table (``caption_rows``, image i's captions at ``offsets[i]:offsets[i+1]``).
Its metadata names the encoder and a hash of the captions, so an edited captions file is embedded
again rather than served stale. Each training step picks one caption per image with a generator seeded
by (seed, step): the batch at step s stays a pure function of (seed, s), so resumed runs see the same
captions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from harness.core.contracts import Conditioning
from harness.core.distributed import Dist, all_true, on_main_then_all
from harness.core.errors import VQBenchError, error_text
from harness.core.io import write_atomic
from harness.data.datasets import open_dataset

ENCODE_BATCH = 256


@dataclass(frozen=True)
class TextConditions:
    """Caption embeddings of a split and the seeded caption pick of each training step."""
    embeddings: torch.Tensor      # U x D (pooled) or U x L x D (tokens) float32: one row per distinct caption
    offsets: torch.Tensor         # N + 1 int64: image i's captions are caption_rows[offsets[i]:offsets[i+1]]
    caption_rows: torch.Tensor    # int64 rows of ``embeddings``
    encoder: str
    captions_sha256: str

    @property
    def tokens(self) -> int:
        """The number of text tokens in the condition (0: one pooled embedding)."""
        return int(self.embeddings.shape[1]) if self.embeddings.dim() == 3 else 0

    @property
    def conditioning(self) -> Conditioning:
        return Conditioning("text", text_dim=int(self.embeddings.shape[-1]))

    def pick(self, images: torch.Tensor, seed: int, step: int) -> torch.Tensor:
        """One caption embedding per image (len(images) x D), uniformly among its captions."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        draw = torch.rand(len(self.offsets) - 1, generator=g)[images]     # one draw per image of the split
        first, counts = self.offsets[images], self.offsets[images + 1] - self.offsets[images]
        choice = (draw * counts).long().clamp(max=counts - 1)
        return self.embeddings[self.caption_rows[first + choice]]


def has_captions(dataset: str) -> bool:
    """Whether ``dataset`` serves captions (``captions(indices)``), i.e. trains text-conditioned generators."""
    return hasattr(open_dataset(dataset, "train", n=1), "captions")


def captions_hash(captions: list[tuple[str, ...]]) -> str:
    return hashlib.sha256(json.dumps(captions).encode()).hexdigest()[:16]


def text_cache(tokenizer_checkpoint: Path, dataset: str, n: int | None, encoder: str, mode: str) -> Path:
    key = hashlib.sha256(f"{dataset}|{n}|{encoder}|{mode}".encode()).hexdigest()[:12]
    return Path(tokenizer_checkpoint) / f"text-train-{key}.safetensors"


@torch.no_grad()
def caption_conditions(dataset: str, n: int | None, encoder: str, mode: str, cache: Path, d: Dist) -> TextConditions:
    """The training split's captions embedded by ``encoder`` (a text-encoder spec) as ``mode`` says
    (``pooled`` or ``tokens``); rank 0 encodes and writes the cache, the others read it."""
    ds = open_dataset(dataset, "train", n=n)
    captions = ds.captions(range(len(ds)))
    digest = captions_hash(captions)       # also part of the run's config hash (train_generator)
    fresh = _read(cache, encoder, mode, digest) if cache.exists() else None
    if all_true(fresh is not None, d):
        return fresh
    on_main_then_all(lambda: _embed_and_write(captions, encoder, mode, digest, cache, d), d.is_main,
                     f"cannot embed the captions of {dataset} into {cache}", d)
    out = _read(cache, encoder, mode, digest)
    if out is None:
        raise VQBenchError(f"text cache {cache} was just written but does not match its captions; delete it")
    return out


def _embed_and_write(captions: list[tuple[str, ...]], encoder: str, mode: str, digest: str, cache: Path,
                     d: Dist) -> None:
    from harness.models.text_encoders import build_text_encoder, condition_embeddings
    distinct = sorted({c for caps in captions for c in caps})
    row_of = {c: i for i, c in enumerate(distinct)}
    text_encoder = build_text_encoder(encoder).to(d.device)
    embeddings = condition_embeddings(text_encoder, distinct, 0 if mode == "pooled" else None, ENCODE_BATCH)
    offsets = torch.tensor([0] + [len(caps) for caps in captions]).cumsum(0)
    rows = torch.tensor([row_of[c] for caps in captions for c in caps], dtype=torch.int64)
    tensors = {"embeddings": embeddings.contiguous(), "offsets": offsets, "caption_rows": rows}
    meta = {"encoder": encoder, "mode": mode, "captions_sha256": digest}
    write_atomic(cache, lambda p: save_file(tensors, str(p), metadata=meta))


def check_covers(text: TextConditions, n_images: int, token_cache: Path, dataset: str) -> None:
    """The captions and the token cache must describe the same images (a folder that gained or lost
    images since its tokens were cached would otherwise pair images with other images' captions)."""
    if len(text.offsets) - 1 != n_images:
        raise VQBenchError(f"{dataset} has captions for {len(text.offsets) - 1} images but the token cache "
                           f"{token_cache} holds {n_images}; delete the token cache and the split is encoded again")


def _read(cache: Path, encoder: str, mode: str, digest: str) -> TextConditions | None:
    """The cache's conditions; None when written for another encoder or other captions (stale)."""
    try:
        with safe_open(str(cache), "pt") as f:
            meta = f.metadata() or {}
            data = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise VQBenchError(f"text cache {cache} is unreadable or corrupt ({error_text(e)}); delete it and the "
                           "captions are embedded again") from None
    if meta.get("encoder") != encoder or meta.get("mode") != mode or meta.get("captions_sha256") != digest:
        return None
    return TextConditions(data["embeddings"], data["offsets"], data["caption_rows"], encoder, digest)
