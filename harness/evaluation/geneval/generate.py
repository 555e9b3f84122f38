"""`vqbench geneval generate GEN_RUN --out DIR`: a text-conditioned generator's samples of GenEval's
prompts in GenEval's folder layout (``DIR/00000/metadata.jsonl``, ``DIR/00000/samples/0000.png`` ...),
ready for `vqbench eval geneval DIR`.

Prompts are GenEval's published 553 (``prompts.generate_metadata()``) or a metadata file you give
(``--metadata``, e.g. a subset written by `vqbench geneval-prompts`). Prompts are sampled in chunks,
chunk c with a generator seeded by (seed, c), so a rerun skips the prompt folders already complete and
still writes the images an uninterrupted run would have written. What made the folder (checkpoint,
config hash, step, sampler, seed, chunking, prompt set) is written to ``DIR/generation.json`` first; a
rerun with anything else is refused, so one folder never mixes two generators' images, and
`vqbench eval geneval DIR` labels its rows with it. Images are saved at the tokenizer's resolution
(grayscale repeated to RGB); GenEval's judges resize as they need.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from PIL import Image

from harness.core.contracts import SamplerConfig
from harness.core import checkpoint as ckpt
from harness.core.distributed import collective_device, on_main_then_all, setup, shard_batches
from harness.core.errors import VQBenchError
from harness.core.io import write_atomic
from harness.evaluation.generate import batch_seed, prompted, to_uint8_hwc
from harness.evaluation.geneval.prompts import (IMAGES_PER_PROMPT, generate_metadata, prompt_set_id,
                                                read_metadata, sample_folder, write_prompt_folder)
from harness.models.checkpoints import load_pair, run_text_condition


MANIFEST = "generation.json"


def _complete(samples_dir: Path, index: int, record: dict, images_per_prompt: int) -> bool:
    """Whether prompt ``index``'s folder holds its metadata and every image (damaged metadata: no)."""
    folder = sample_folder(samples_dir, index)
    try:
        if json.loads((folder / "metadata.jsonl").read_text(encoding="utf-8")) != record:
            return False
    except (OSError, ValueError):           # missing, unreadable, not UTF-8 or not JSON: written again
        return False
    return all((folder / "samples" / f"{i:04d}.png").is_file() for i in range(images_per_prompt))


def read_manifest(samples_dir: Path) -> dict | None:
    """What `geneval generate` recorded in ``samples_dir`` (None: no manifest, e.g. samples made elsewhere)."""
    path = Path(samples_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VQBenchError(f"{path} is unreadable ({type(e).__name__}); delete it (and the samples it "
                           "describes) or restore it") from None
    if not isinstance(made, dict):
        raise VQBenchError(f"{path} is not a JSON object; delete it (and the samples it describes) or restore it")
    return made


def _claim_folder(out_dir: Path, manifest: dict) -> None:
    """Write the manifest of a new folder, or refuse one that other settings made."""
    before = read_manifest(out_dir)
    if before is None:
        if any(p.is_dir() and p.name.isdigit() for p in out_dir.iterdir()) if out_dir.is_dir() else False:
            raise VQBenchError(f"{out_dir} already holds prompt folders that `geneval generate` did not record; "
                               "use another --out")
        write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1).encode())
        return
    differ = [f"{k}: {before.get(k)!r}, now {v!r}" for k, v in manifest.items() if before.get(k) != v]
    if differ:
        raise VQBenchError(f"{out_dir} was generated with other settings ({'; '.join(differ)}); rerun with "
                           "the same ones to complete it, or use another --out")


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
    path = ckpt.resolve(checkpoint)
    manifest = {"checkpoint": str(path.resolve()), "preset": state["preset"], "config_hash": state["config_hash"],
                "step": state["step"], "sampler": dataclasses.asdict(sampler), "seed": seed,
                "prompts_per_batch": prompts_per_batch, "images_per_prompt": images_per_prompt,
                "prompt_set": prompt_set_id(records)}
    on_main_then_all(lambda: _claim_folder(out_dir, manifest), d.is_main, f"cannot use {out_dir}", d)
    missing = {p for p in range(len(records)) if not _complete(out_dir, p, records[p], images_per_prompt)}
    # every prompt embedded once (a chunk's rows are sliced from it)
    conditions = prompted([r["prompt"] for r in records], text, "GenEval prompts", device=d.device) if missing else None
    written = skipped = 0
    for chunk in shard_batches(len(records), prompts_per_batch, d):
        todo = [p for p in chunk if p in missing]
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
    if d.enabled:                           # every rank's counts, so the one line printed is the whole story
        counts = torch.tensor([written, skipped], dtype=torch.int64, device=collective_device(d))
        torch.distributed.all_reduce(counts)
        written, skipped = (int(c) for c in counts)
    return written, skipped
