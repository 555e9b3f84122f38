"""`vqbench geneval generate GEN_RUN --out DIR`: a text-conditioned generator's samples of GenEval's
prompts in GenEval's folder layout (``DIR/00000/metadata.jsonl``, ``DIR/00000/samples/0000.png`` ...),
ready for `vqbench eval geneval DIR`.

Prompts are GenEval's published 553 (``prompts.generate_metadata()``) or a metadata file you give
(``--metadata``, e.g. a subset written by `vqbench geneval-prompts`). Prompts are sampled in chunks,
chunk c with a generator seeded by (seed, c), so a rerun skips the prompt folders already complete and
still writes the images an uninterrupted run would have written. Images are saved at the tokenizer's
resolution (grayscale repeated to RGB); GenEval's judges resize as they need.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from harness.core.contracts import SamplerConfig
from harness.core.distributed import setup, shard_batches
from harness.core.errors import VQBenchError
from harness.evaluation.generate import batch_seed, prompted, to_uint8_hwc
from harness.evaluation.geneval.prompts import (IMAGES_PER_PROMPT, generate_metadata, read_metadata,
                                                sample_folder, write_prompt_folder)
from harness.models.checkpoints import load_pair, run_text_condition


def _complete(samples_dir: Path, index: int, record: dict, images_per_prompt: int) -> bool:
    folder = sample_folder(samples_dir, index)
    meta = folder / "metadata.jsonl"
    if not meta.is_file() or json.loads(meta.read_text(encoding="utf-8")) != record:
        return False
    return all((folder / "samples" / f"{i:04d}.png").is_file() for i in range(images_per_prompt))


@torch.no_grad()
def generate_geneval_samples(checkpoint, out_dir: Path, *, metadata: Path | None, sampler: SamplerConfig,
                             seed: int = 0, prompts_per_batch: int = 8,
                             images_per_prompt: int = IMAGES_PER_PROMPT, device: str = "auto") -> tuple[int, int]:
    """Write the samples; returns (prompts written now, prompts already complete)."""
    records = read_metadata(metadata) if metadata is not None else generate_metadata()
    d = setup(device)
    generator, state, tokenizer, _, _ = load_pair(checkpoint, d.device)
    text = run_text_condition(state)
    if text is None:
        raise VQBenchError(f"{checkpoint} is a class-conditional generator (trained on "
                           f"{state['data']['dataset']}); GenEval needs one trained on a captioned dataset")
    out_dir = Path(out_dir)
    todo_any = [p for p in range(len(records)) if not _complete(out_dir, p, records[p], images_per_prompt)]
    # every prompt embedded once (a chunk's rows are sliced from it)
    conditions = prompted([r["prompt"] for r in records], text, "GenEval prompts", device=d.device) if todo_any else None
    written = skipped = 0
    for chunk in shard_batches(len(records), prompts_per_batch, d):
        todo = [p for p in chunk if not _complete(out_dir, p, records[p], images_per_prompt)]
        skipped += len(chunk) - len(todo)
        if not todo:
            continue
        # the whole chunk is sampled (its generator state covers every row), its complete folders kept
        cond = conditions.cond[chunk.start:chunk.stop].repeat_interleave(images_per_prompt, dim=0).to(d.device)
        g = torch.Generator(device=d.device).manual_seed(batch_seed(seed, chunk.start // prompts_per_batch))
        idx = generator.sample(len(cond), cond, sampler=sampler, generator=g)
        images = to_uint8_hwc(tokenizer.decode(idx).clamp(-1, 1))
        for k, p in enumerate(chunk):
            if p in todo:
                block = images[k * images_per_prompt:(k + 1) * images_per_prompt]
                write_prompt_folder(out_dir, p, records[p], [Image.fromarray(im) for im in block])
                written += 1
    return written, skipped
