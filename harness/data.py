"""Datasets: every image set serves float images in [-1, 1] (C x H x W) with int64 labels.

``open_dataset("fashion-mnist", "train", resolution=28, channels=1, n=5000)``. ``n`` keeps the first n
images of a fixed, seeded permutation (class-mixed, identical on every machine). Grayscale sets
can be served as 3 channels and RGB sets as 1 (ITU-R 601 luma). Every dataset has
``batch(indices) -> (images, labels)``, which the trainer and evaluator use instead of a DataLoader:
the in-memory sets slice a uint8 tensor without Python loops.
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VQBenchError
from .registry import DATASETS

SUBSET_SEED = 20240101     # fixes which images `n` selects, the same everywhere
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div_(127.5).sub_(1.0)


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 N x C x H x W -> requested channel count (repeat gray, or ITU-R 601 luma of RGB)."""
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise VQBenchError(f"cannot serve a {c}-channel dataset as {channels} channels (use 1 or 3)")


def resize_uint8(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    if resolution is None or images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear",
                        antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def subset_order(total: int, n: int | None) -> torch.Tensor:
    if n is None or n >= total:
        return torch.arange(total)
    if n <= 0:
        raise VQBenchError(f"--n-train/--n-eval must be positive (got {n})")
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(total, generator=g)[:n].sort().values


class TensorImageDataset(torch.utils.data.Dataset):
    """An image set held in memory as uint8 N x C x H x W."""

    def __init__(self, name: str, split: str, images: torch.Tensor, labels: torch.Tensor,
                 num_classes: int, n: int | None = None):
        keep = subset_order(len(images), n)
        self.name, self.split, self.num_classes = name, split, num_classes
        self.images_uint8, self.labels = images[keep], labels[keep].long()

    @property
    def resolution(self) -> int:
        return self.images_uint8.shape[-1]

    @property
    def channels(self) -> int:
        return self.images_uint8.shape[1]

    def __len__(self) -> int:
        return len(self.images_uint8)

    def __getitem__(self, i: int):
        return to_float(self.images_uint8[i]), self.labels[i]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.images_uint8[indices]), self.labels[indices]

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "n": len(self),
                "resolution": self.resolution, "channels": self.channels}


def _check_split(name: str, split: str, splits=("train", "test")) -> None:
    if split not in splits:
        raise VQBenchError(f"dataset {name!r} has splits {', '.join(splits)}, not {split!r}")


# ---------------------------------------------------------------- Fashion-MNIST (the default)
FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fashion_mnist_dirs() -> list[Path]:
    dirs = [Path("/usr/share/datasets/fashion-mnist")]      # Debian's dataset-fashion-mnist
    if os.environ.get("VQBENCH_DATA"):
        dirs.append(Path(os.environ["VQBENCH_DATA"]) / "fashion-mnist")
    from .weights import cache_dir
    dirs.append(cache_dir() / "data" / "FashionMNIST" / "raw")  # torchvision's downloader
    return dirs


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise VQBenchError(f"{path} is truncated or corrupt (expected {shape}); reinstall it "
                           "(bash scripts/setup.sh)")
    return arr.reshape(shape)


@functools.lru_cache(maxsize=2)
def _fashion_mnist_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_name, labels_name = FMNIST_FILES[split]
    for d in fashion_mnist_dirs():
        if (d / images_name).exists() and (d / labels_name).exists():
            images = torch.from_numpy(_read_idx(d / images_name).copy()).unsqueeze(1)
            labels = torch.from_numpy(_read_idx(d / labels_name).astype(np.int64))
            return images, labels
    raise VQBenchError("Fashion-MNIST not found (looked in "
                       + ", ".join(str(d) for d in fashion_mnist_dirs())
                       + "); run `bash scripts/setup.sh` (apt package dataset-fashion-mnist or a "
                         "torchvision download) or set VQBENCH_DATA")


@DATASETS.register("fashion-mnist", description="Fashion-MNIST, 28x28 grayscale, 10 classes, "
                                                "60k train / 10k test (the embedded default)")
def fashion_mnist(split: str, resolution: int | None = None, channels: int | None = None,
                  n: int | None = None, root: str | None = None) -> TensorImageDataset:
    _check_split("fashion-mnist", split)
    images, labels = _fashion_mnist_arrays(split)
    ds = TensorImageDataset("fashion-mnist", split, images, labels, 10, n)
    ds.images_uint8 = convert_channels(resize_uint8(ds.images_uint8, resolution), channels)
    return ds


# ---------------------------------------------------------------- procedural (tests)
PROCEDURAL_SIZES = {"train": 512, "test": 128}


@DATASETS.register("procedural", description="synthetic shapes (disc, square, stripes, gradient), "
                                             "4 classes, 16x16 gray, 512 train / 128 test (tests)")
def procedural(split: str, resolution: int | None = None, channels: int | None = None,
               n: int | None = None, root: str | None = None) -> TensorImageDataset:
    _check_split("procedural", split)
    res = resolution or 16
    count = PROCEDURAL_SIZES[split]
    rng = np.random.default_rng(0 if split == "train" else 1)
    yy, xx = np.mgrid[0:res, 0:res] / (res - 1)
    labels = np.arange(count) % 4
    cx, cy = rng.uniform(0.3, 0.7, (2, count, 1, 1))
    size = rng.uniform(0.15, 0.3, (count, 1, 1))
    fg, bg = rng.uniform(0.6, 1.0, (count, 1, 1)), rng.uniform(0.0, 0.3, (count, 1, 1))
    freq = rng.integers(2, 5, (count, 1, 1))
    shapes = np.stack([
        (xx - cx) ** 2 + (yy - cy) ** 2 < size ** 2,                         # disc
        np.maximum(abs(xx - cx), abs(yy - cy)) < size,                       # square
        np.sin(2 * np.pi * freq * yy + cx * 6) > 0,                          # stripes
        np.broadcast_to((xx + yy) / 2 > cx, (count, res, res)),              # diagonal edge
    ])[labels, np.arange(count)]
    img = np.where(shapes, fg, bg) + 0.25 * (labels == 3)[:, None, None] * (xx + yy) / 2
    images = torch.from_numpy(np.clip(img * 255, 0, 255).round().astype(np.uint8)).unsqueeze(1)
    ds = TensorImageDataset("procedural", split, images, torch.from_numpy(labels), 4, n)
    ds.images_uint8 = convert_channels(ds.images_uint8, channels)
    return ds


# ---------------------------------------------------------------- CIFAR-10 (user files)
@DATASETS.register("cifar10", description="CIFAR-10 from files you have ($VQBENCH_DATA/cifar10 or root=): "
                                          "torchvision's loader, 32x32 RGB, 10 classes")
def cifar10(split: str, resolution: int | None = None, channels: int | None = None,
            n: int | None = None, root: str | None = None) -> TensorImageDataset:
    _check_split("cifar10", split)
    root = Path(root or Path(os.environ.get("VQBENCH_DATA", "~/.cache/vqbench/data")).expanduser() / "cifar10")
    from torchvision.datasets import CIFAR10
    try:
        raw = CIFAR10(str(root), train=split == "train", download=False)
    except RuntimeError:
        raise VQBenchError(f"CIFAR-10 not found under {root} (expected cifar-10-batches-py/); download "
                           "it with torchvision.datasets.CIFAR10(root, download=True) on a machine "
                           "with internet, or set VQBENCH_DATA") from None
    images = torch.from_numpy(raw.data).permute(0, 3, 1, 2).contiguous()
    ds = TensorImageDataset("cifar10", split, images, torch.tensor(raw.targets), 10, n)
    ds.images_uint8 = convert_channels(resize_uint8(ds.images_uint8, resolution), channels)
    return ds


# ---------------------------------------------------------------- image folders (ImageNet, ...)
def center_crop_arr(pil_image, image_size: int):
    """ADM's (guided-diffusion) center crop: BOX-halve while large, BICUBIC to size, crop the center."""
    from PIL import Image
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top: top + image_size, left: left + image_size]


class ImageFolderDataset(torch.utils.data.Dataset):
    """Class subfolders (sorted names -> labels) or a flat folder (labels -1); ``<path>/<split>`` if present."""

    def __init__(self, path: str, split: str, resolution: int | None, channels: int | None, n: int | None):
        base = Path(path).expanduser()
        if not base.is_dir():
            raise VQBenchError(f"imagefolder: {base} is not a folder")
        root = base / split if (base / split).is_dir() else base
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if classes:
            files = [(f, i) for i, c in enumerate(classes) for f in _image_files(root / c)]
        else:
            files = [(f, -1) for f in _image_files(root)]
        if not files:
            raise VQBenchError(f"imagefolder: no images in {root} (accepted extensions: "
                               f"{', '.join(IMAGE_EXTENSIONS)})")
        keep = subset_order(len(files), n).tolist()
        self.files = [files[i] for i in keep]
        self.name, self.split, self.num_classes = f"imagefolder:{base}", split, len(classes)
        self.resolution, self.channels = resolution or 256, channels or 3

    def __len__(self) -> int:
        return len(self.files)

    def load_uint8(self, i: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError
        path = self.files[i][0]
        try:
            with Image.open(path) as im:
                arr = center_crop_arr(im.convert("RGB"), self.resolution)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise VQBenchError(f"cannot read image {path}: {e.__class__.__name__}; remove or replace "
                               "the file") from None
        return convert_channels(torch.from_numpy(arr).permute(2, 0, 1)[None], self.channels)[0]

    def __getitem__(self, i: int):
        return to_float(self.load_uint8(i)), torch.tensor(self.files[i][1])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = indices.tolist()
        images = torch.stack([self.load_uint8(i) for i in idx])
        return to_float(images), torch.tensor([self.files[i][1] for i in idx], dtype=torch.long)

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "n": len(self),
                "resolution": self.resolution, "channels": self.channels}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@DATASETS.register("imagefolder", description="imagefolder:<path> - ImageNet-style class folders or a "
                                              "flat folder, ADM center crop to the resolution (default 256)")
def imagefolder(split: str, resolution: int | None = None, channels: int | None = None,
                n: int | None = None, root: str | None = None) -> ImageFolderDataset:
    if not root:
        raise VQBenchError("imagefolder needs a path: --dataset imagefolder:/path/to/images")
    return ImageFolderDataset(root, split, resolution, channels, n)


def open_dataset(spec: str, split: str, *, resolution: int | None = None, channels: int | None = None,
                 n: int | None = None, root: str | None = None):
    """``spec`` is a registered name, or ``name:<root>`` (``imagefolder:/data/imagenet``)."""
    name, _, arg = spec.partition(":")
    factory = DATASETS.get(name)
    return factory(split, resolution=resolution, channels=channels, n=n, root=arg or root)
