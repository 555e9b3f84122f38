"""Pictures for entry pages: a tokenizer's first test images above their reconstructions and its codebook
usage histogram, a generator's first samples (its class-balanced ``samples/<label>.npz``), read from the
suite folder beside the results file; nothing is drawn when the run folder or samples are not there."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


GRID_IMAGES = 16
SAMPLE_IMAGES = 32
HISTOGRAM_IMAGES = 2000
MIN_SIDE = 96            # small images (Fashion-MNIST's 28 px) are enlarged, nearest neighbour, to be seen


def grid(images_hwc: np.ndarray, columns: int) -> np.ndarray:
    """uint8 N x H x W x 3 -> one uint8 image, ``columns`` per row, 2-pixel white gutters."""
    n, h, w, c = images_hwc.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i, im in enumerate(images_hwc):
        r, k = divmod(i, columns)
        out[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + k * (w + 2):2 + k * (w + 2) + w] = im
    scale = max(1, MIN_SIDE // max(h, 1))
    return out.repeat(scale, 0).repeat(scale, 1) if scale > 1 else out


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image
    from harness.core.io import write_atomic
    import io
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def tokenizer_pictures(checkpoint: Path, dataset: str, resolution: int, folder: Path) -> list[tuple[Path, str]]:
    """(PNG path, caption) of a tokenizer checkpoint's reconstruction grid and codebook usage histogram, drawn
    into ``folder``; none when the checkpoint or the dataset cannot be read here (a page without its pictures
    beats no site)."""
    from harness.models.checkpoints import load_tokenizer
    try:
        model, _, _ = load_tokenizer(checkpoint)
    except Exception:    # noqa: BLE001 (a plugin's model not importable here: the page says the pictures are missing)
        return []
    out = []
    for draw in (reconstruction_grid, codebook_histogram):
        try:
            out.append(draw(model, dataset, resolution, folder))
        except Exception:    # noqa: BLE001 (a moved dataset: that picture is left out)
            continue
    return out


def reconstruction_grid(model, dataset: str, resolution: int, folder: Path) -> tuple[Path, str]:
    """The first ``GRID_IMAGES`` test images (top) and their reconstructions (bottom)."""
    from harness.data.datasets import open_dataset
    from harness.evaluation.generate import to_uint8_hwc
    ds = open_dataset(dataset, "test", resolution=resolution, channels=model.in_channels, n=GRID_IMAGES)
    images, _ = ds.batch(torch.arange(len(ds)))
    with torch.no_grad():
        recon = model.decode(model.encode(images))
    pair = np.concatenate([to_uint8_hwc(images), to_uint8_hwc(recon)])
    save_png(grid(pair, len(images)), folder / "reconstructions.png")
    return folder / "reconstructions.png", "the first test images (top) and their reconstructions (bottom)"


def codebook_histogram(model, dataset: str, resolution: int, folder: Path) -> tuple[Path, str]:
    """How often each code is used on the first ``HISTOGRAM_IMAGES`` test images, codes sorted by use: dead codes
    are the flat tail at zero. Every position is pooled against the largest codebook (VCQ's K_max); a factorized
    tokenizer's sub-codebooks are counted as separate codes (k x K), as ``codebook_usage`` averages over them."""
    from harness.data.datasets import open_dataset
    from harness.reporting.figures import new_figure, print_styled, save_figure
    ds = open_dataset(dataset, "test", resolution=resolution, channels=model.in_channels, n=HISTOGRAM_IMAGES)
    k, factors = model.layout.max_codebook_size, model.layout.num_factors
    size = k * factors
    offsets = torch.arange(factors) * k              # factor f's code c is code f * K + c
    counts = torch.zeros(size, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(ds), 250):
            x, _ = ds.batch(torch.arange(start, min(start + 250, len(ds))))
            codes = model.encode(x).cpu().reshape(len(x), -1, factors) + offsets
            counts += torch.bincount(codes.flatten(), minlength=size)[:size]
    ranked = counts.sort(descending=True).values.numpy()
    used = int((ranked > 0).sum())

    @print_styled
    def draw():
        fig, (ax,) = new_figure(1)
        ax.stairs(ranked, np.arange(size + 1) + 0.5, fill=True, color="C0")     # one artist, not K bars
        ax.set_yscale("symlog", linthresh=1)
        pooled = f" ({factors} sub-codebooks x {k})" if factors > 1 else ""
        ax.set(xlim=(0, size + 1), xlabel=f"codes{pooled}, sorted by use", ylabel=f"uses on {len(ds)} test images",
               title=f"{used} of {size} codes used")
        return save_figure(fig, folder / "codebook-usage")

    draw()
    return folder / "codebook-usage.png", (f"codebook usage histogram: uses of each code on the first {len(ds)} test "
                                           f"images, codes sorted by use; {used} of {size} used "
                                           f"({used / size:.1%}); the flat tail at zero is the dead codes")


def samples_grid(npz: Path, path: Path) -> bool:
    if not npz.is_file():
        return False
    try:
        with np.load(npz) as f:
            samples = f["arr_0"][:SAMPLE_IMAGES]
    except Exception:    # noqa: BLE001 (a truncated or foreign .npz: the page says the grid is missing)
        return False
    if samples.ndim != 4 or len(samples) == 0 or samples.shape[-1] not in (1, 3):
        return False
    if samples.shape[-1] == 1:
        samples = samples.repeat(3, axis=-1)
    save_png(grid(samples.astype(np.uint8), 8), path)
    return True
