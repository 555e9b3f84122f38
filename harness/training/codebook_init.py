"""Data-initialised codebooks (``codebook_init="data"``): before the first step, the codes are set to
encoder outputs of the first training batches (harness.models.quantizers.vq, ``init_from_vectors``).

The batches are the run's own first ones (steps 0, 1, ...), enough of them to give one vector per code
where the batch holds fewer, at most ``MAX_BATCHES``; the rows are drawn with a generator seeded by
the run's seed, so for one world size the initial codebook is a function of (seed, weights), and a
resumed run, which loads its codebook from the checkpoint, never redraws it. Under torchrun rank 0
draws from its own share of the batches and its codebook is broadcast (with many processes and a large
codebook, rows then repeat with noise sooner)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.training.batches import BatchOrder

MAX_BATCHES = 16


def wants_data_init(model) -> bool:
    return getattr(model.cfg, "codebook_init", "uniform") == "data"


@torch.no_grad()
def init_codebook_from_data(model, ds, order: BatchOrder, seed: int, d: Dist) -> None:
    quantizer = getattr(model, "quantizer", None)
    if quantizer is None or not hasattr(quantizer, "init_from_vectors"):
        raise VQBenchError(f"--set codebook_init=data: {type(model).__name__} has no nearest-code codebook to "
                           "initialise; use codebook_init=uniform")
    was_training = model.training
    model.to(d.device)                            # before place(): the batches are on the run's device
    model.eval()                                  # no dropout draw: the global RNG stream is untouched
    vectors, step = [], 0
    while step < MAX_BATCHES and sum(len(v) for v in vectors) < quantizer.codebook_size:
        x, _ = ds.batch(order.indices(step))
        vectors.append(model.quantizer_inputs(x.to(d.device)).float())
        step += 1
    quantizer.init_from_vectors(torch.cat(vectors), torch.Generator().manual_seed(seed))
    model.train(was_training)
    if d.enabled:                                 # the weight is on the collective's device (NCCL: the GPU)
        dist.broadcast(quantizer.embedding.weight.data, src=0)
