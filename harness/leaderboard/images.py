"""Image grids for entry pages: a tokenizer's first test images above their reconstructions, a generator's
first samples (its class-balanced ``samples/<label>.npz``), read from the suite folder beside the results
file; nothing is drawn when the run folder or samples are not there."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


GRID_IMAGES = 16
SAMPLE_IMAGES = 32
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


def reconstruction_grid(checkpoint: Path, dataset: str, resolution: int, path: Path) -> bool:
    """The first ``GRID_IMAGES`` test images (top) and their reconstructions (bottom); False when the
    checkpoint or the dataset cannot be read here."""
    from harness.data.datasets import open_dataset
    from harness.evaluation.generate import to_uint8_hwc
    from harness.models.checkpoints import load_tokenizer
    try:                 # a page without its grid beats no site: any failure here leaves the grid out
        model, _, _ = load_tokenizer(checkpoint)
        ds = open_dataset(dataset, "test", resolution=resolution, n=GRID_IMAGES)
        images, _ = ds.batch(torch.arange(len(ds)))
        with torch.no_grad():
            recon = model.decode(model.encode(images))
    except Exception:    # noqa: BLE001 (a plugin's model, a moved dataset: the page says the grid is missing)
        return False
    pair = np.concatenate([to_uint8_hwc(images), to_uint8_hwc(recon)])
    save_png(grid(pair, len(images)), path)
    return True


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
