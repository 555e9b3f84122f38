"""Held-out likelihood of a next-token generator: how well it models a tokenizer's tokens of unseen images.

The test images are encoded by the run's tokenizer (as the generator sees it: ``factors=as-positions``
reads k sub-codes as k positions) and the generator scores their codes under their true class labels,
teacher-forced, in eval mode and without guidance (a guided mixture of logits is not a normalised
distribution). Rows:

- ``nll_bits_per_image``: the codes' total negative log2-likelihood per image, the mean over images with
  its standard error (std / sqrt N). Comparable across tokenizers of one image budget: it is the code
  length of an image's tokens under the model, whatever their count and order;
- ``nll_bits_per_token``: the same divided by the image's token count (positions x factors).

What the leaderboard's AR probe reports beside its gFID (harness.leaderboard.ar_probe). Only generators with
exact token likelihoods (``token_nll``: the AR family) have it. Under torchrun every process scores all N
images (seconds at the default N; the values are identical) and rank 0 writes the rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.data.datasets import open_dataset
from harness.evaluation.recording import Evaluation, LoadedRun, Measurement, register_evaluation

LIKELIHOOD_METRICS = ("nll_bits_per_image", "nll_bits_per_token")


@register_evaluation
@dataclass(frozen=True)
class TokenLikelihood(Evaluation):
    """negative log2-likelihood of the test images' tokens under a next-token generator (bits per image, per token)"""
    name = "likelihood"
    kind = "generator"
    n: int | None = 2000
    split: str = "test"
    dataset: str | None = None
    batch_size: int = 250

    def settings(self, run: LoadedRun) -> dict:
        return {"split": self.split, "n": self.n}

    def yields(self, run: LoadedRun) -> set:
        return {(m, None) for m in LIKELIHOOD_METRICS}

    def measure(self, run: LoadedRun, d: Dist, todo: set) -> list[Measurement]:
        generator = run.model
        if not hasattr(generator, "token_nll"):
            raise VQBenchError(f"{run.run_id}: the likelihood evaluation needs a generator with exact token "
                               f"likelihoods (the AR family); {generator.family} has none")
        if generator.conditioning.kind == "text":
            raise VQBenchError(f"{run.run_id}: the likelihood evaluation scores class-conditional (or unconditional) "
                               "generators; this one is text-conditioned")
        ds = open_dataset(self.dataset_of(run), self.split, resolution=run.resolution, channels=run.channels, n=self.n)
        bits = per_image_bits(generator, run.tokenizer, ds, self.batch_size, d.device)
        tokens = math.prod(run.tokenizer.layout.index_shape)
        n = len(bits)
        mean = float(bits.mean())
        stderr = float(bits.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
        extra = {"stderr_kind": "mean over images (std / sqrt N)"}
        return [Measurement("nll_bits_per_image", mean, False, n, extra=extra | {"stderr": stderr}),
                Measurement("nll_bits_per_token", mean / tokens, False, n, extra=extra | {"stderr": stderr / tokens})]


@torch.no_grad()
def per_image_bits(generator, tokenizer, ds, batch_size: int, device) -> torch.Tensor:
    """N negative log2-likelihoods (float64): each image's codes summed, under its class label."""
    class_conditional = generator.conditioning.kind == "class"
    out = []
    for start in range(0, len(ds), batch_size):
        x, y = ds.batch(torch.arange(start, min(start + batch_size, len(ds))))
        indices = tokenizer.encode(x.to(device))
        if class_conditional and (int(y.min()) < 0 or int(y.max()) >= generator.conditioning.num_classes):
            raise VQBenchError(f"dataset labels lie outside the generator's {generator.conditioning.num_classes} "
                               "classes; score it on the dataset it was trained on")
        cond = y.long().to(device) if class_conditional else None
        nats = generator.token_nll(indices, cond).double()
        out.append(nats.reshape(len(indices), -1).sum(1).cpu() / math.log(2))
    return torch.cat(out)
