"""Datasets: every image set serves float32 images in [-1, 1] (C x H x W) with int64 labels.

``open_dataset("fashion-mnist", "train", resolution=28, channels=1, n=5000)``; ``spec`` is a
registered name or ``name:<root>`` (``imagefolder:/data/imagenet``).

- ``n`` keeps the first n images of a fixed permutation seeded by ``SUBSET_SEED``: the subset is
  class-mixed, identical on every call and machine, and a smaller n is a subset of a larger one.
  The kept images are served in their original (file / index) order.
- ``channels``: grayscale sets can be served as 3 channels (repeated) and RGB sets as 1 (ITU-R 601
  luma, rounded to uint8); by default each set keeps its native count.
- ``resolution``: in-memory sets (Fashion-MNIST 28, CIFAR-10 32) are resized with antialiased
  bilinear interpolation when another size is asked for; image folders use ADM's center crop;
  the procedural set is drawn at that size.

Every dataset has ``batch(indices) -> (images, labels)``, which the trainer and evaluator use
instead of a DataLoader: in-memory sets (``TensorImageDataset``: ``.images_uint8`` N x C x H x W
and ``.labels``) slice tensors without Python loops, image folders decode the files then.
"""
from __future__ import annotations

import functools
import gzip
import os
import stat
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.errors import VQBenchError
from harness.core.registry import DATASETS

SUBSET_SEED = 20240101     # fixes which images `n` selects, the same everywhere
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
                    ".pnm", ".gif")
SETUP_HINT = "run `bash scripts/setup.sh` (apt-installs dataset-fashion-mnist or downloads it with torchvision)"


# ---------------------------------------------------------------- shared helpers
def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 N x C x H x W -> the requested channel count (repeat gray, or ITU-R 601 luma of RGB)."""
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)      # a view: 3x the channels, no extra memory
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise VQBenchError(f"cannot serve a {c}-channel dataset as {channels} channels (use 1 or 3)")


def resize_uint8(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """uint8 N x C x H x W -> N x C x res x res, antialiased bilinear (no-op at the native size)."""
    if resolution is None or tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    # torch resizes uint8 directly on CPU (about 3x faster than via float; rounding differs by <= 1)
    return F.interpolate(images.contiguous(), size=(resolution, resolution), mode="bilinear",
                         antialias=True, align_corners=False)


def subset_order(total: int, n: int | None) -> torch.Tensor:
    """Indices of the kept images: all, or the first n of a seeded permutation, sorted."""
    if n is None or n >= total:
        return torch.arange(total)
    if n <= 0:
        raise VQBenchError(f"the number of images must be positive (got n={n})")
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(total, generator=g)[:n].sort().values


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise VQBenchError(f"dataset {name!r} has splits {', '.join(SPLITS)}, not {split!r}")


def _cache_root() -> Path:
    # same place as harness.core.weights.cache_dir(), without creating it (lookups must not write)
    return Path(os.environ.get("VQBENCH_CACHE", "~/.cache/vqbench")).expanduser()


class ImageDataset(torch.utils.data.Dataset):
    """What every dataset exposes: name, split, num_classes, resolution, channels, batch, describe."""

    name: str
    split: str
    num_classes: int

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.batch(torch.tensor([i]))
        return images[0], labels[0]

    def labels_at(self, indices) -> torch.Tensor:
        """The labels of ``indices`` (without decoding their images where the dataset can)."""
        return self.batch(indices)[1]

    def describe(self) -> dict:
        """The protocol columns of a result row."""
        return {"name": self.name, "split": self.split, "n": len(self),
                "resolution": self.resolution, "channels": self.channels}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class TensorImageDataset(ImageDataset):
    """An image set held in memory as uint8 N x C x H x W (``images_uint8``) with ``labels``."""

    def __init__(self, name: str, split: str, images: torch.Tensor, labels: torch.Tensor,
                 num_classes: int, *, n: int | None = None, resolution: int | None = None,
                 channels: int | None = None):
        keep = subset_order(len(images), n)     # subset first: resizing only what is kept is cheaper
        self.name, self.split, self.num_classes = name, split, num_classes
        self.images_uint8 = convert_channels(resize_uint8(images[keep], resolution), channels)
        self.labels = labels[keep].long()

    @property
    def resolution(self) -> int:
        return self.images_uint8.shape[-1]

    @property
    def channels(self) -> int:
        return self.images_uint8.shape[1]

    def __len__(self) -> int:
        return len(self.images_uint8)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.images_uint8[i]), self.labels[i]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.images_uint8[indices]), self.labels[indices]

    def labels_at(self, indices) -> torch.Tensor:
        return self.labels[torch.as_tensor(indices).reshape(-1)]


# ---------------------------------------------------------------- Fashion-MNIST (the default)
FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fashion_mnist_dirs(root: str | None = None) -> list[Path]:
    """Where the idx files are looked for, in order."""
    dirs = [Path(root).expanduser(), Path(root).expanduser() / "FashionMNIST" / "raw"] if root else []
    dirs.append(Path("/usr/share/datasets/fashion-mnist"))        # Debian's dataset-fashion-mnist
    if os.environ.get("VQBENCH_DATA"):
        dirs.append(Path(os.environ["VQBENCH_DATA"]).expanduser() / "fashion-mnist")
    dirs.append(_cache_root() / "data" / "FashionMNIST" / "raw")   # python -m harness.data.download
    return dirs


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped idx file of uint8 values (the MNIST format) into an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise VQBenchError(f"{path} is not a uint8 idx file; reinstall it ({SETUP_HINT})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise VQBenchError(f"{path} is truncated or corrupt (expected {shape}); reinstall it ({SETUP_HINT})")
    return arr.reshape(shape)


@functools.lru_cache(maxsize=4)
def _read_idx_tensor(path: str) -> torch.Tensor:
    # parsed once per process: every train/eval call after the first is a copy, not a gunzip
    return torch.from_numpy(read_idx(Path(path)).copy())


def fashion_mnist_arrays(split: str, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x 1 x 28 x 28, int64 N) of a split; VQBenchError naming the places looked."""
    images_name, labels_name = FMNIST_FILES[split]
    dirs = fashion_mnist_dirs(root)
    for d in dirs:
        if (d / images_name).is_file() and (d / labels_name).is_file():
            images = _read_idx_tensor(str(d / images_name)).unsqueeze(1)
            return images, _read_idx_tensor(str(d / labels_name)).long()
    raise VQBenchError(f"Fashion-MNIST not found (looked for {images_name} in "
                       + ", ".join(str(d) for d in dirs) + f"); {SETUP_HINT}, or set VQBENCH_DATA")


@DATASETS.register("fashion-mnist", description="Fashion-MNIST, 28x28 grayscale, 10 classes, 60k train / "
                                                "10k test (the embedded default; other resolutions: "
                                                "antialiased bilinear resize)")
def fashion_mnist(split: str, resolution: int | None = None, channels: int | None = None,
                  n: int | None = None, root: str | None = None) -> TensorImageDataset:
    _check_split("fashion-mnist", split)
    images, labels = fashion_mnist_arrays(split, root)
    return TensorImageDataset("fashion-mnist", split, images, labels, 10, n=n,
                              resolution=resolution, channels=channels)


# ---------------------------------------------------------------- procedural (tests)
PROCEDURAL_SIZES = {"train": 512, "test": 128}
PROCEDURAL_CLASSES = ("disc", "square", "horizontal stripes", "diagonal gradient")


def _procedural_images(count: int, res: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 count x res x res shapes with jittered position/size/intensity, labels i % 4."""
    rng = np.random.default_rng(seed)
    # jitter is drawn per image independently of res: the same scenes at every resolution
    cx, cy, size, fg, bg, phase = (rng.uniform(lo, hi, (count, 1, 1)).astype(np.float32) for lo, hi in
                                   ((0.3, 0.7), (0.3, 0.7), (0.15, 0.3), (0.6, 1.0), (0.0, 0.3), (0, 1)))
    freq = rng.integers(2, 5, (count, 1, 1)).astype(np.float32)
    labels = np.arange(count) % 4
    yy, xx = ((np.mgrid[0:res, 0:res] + 0.5) / res).astype(np.float32)   # pixel centres in (0, 1)
    img = np.empty((count, res, res), np.float32)
    for k in range(4):
        m = labels == k
        x0, y0, s = cx[m], cy[m], size[m]
        if k == 0:
            t = ((xx - x0) ** 2 + (yy - y0) ** 2 < s ** 2).astype(np.float32)
        elif k == 1:
            t = (np.maximum(abs(xx - x0), abs(yy - y0)) < s).astype(np.float32)
        elif k == 2:
            t = (np.sin(2 * np.pi * (freq[m] * yy + phase[m])) > 0).astype(np.float32)
        else:
            t = np.clip((xx + yy) / 2 + (x0 - 0.5), 0, 1)
        img[m] = bg[m] + (fg[m] - bg[m]) * t
    return np.clip(img * 255, 0, 255).round().astype(np.uint8), labels


@DATASETS.register("procedural", description="synthetic shapes (disc, square, stripes, diagonal gradient), "
                                             "4 classes, 16x16 gray, 512 train / 128 test (for tests)")
def procedural(split: str, resolution: int | None = None, channels: int | None = None,
               n: int | None = None, root: str | None = None) -> TensorImageDataset:
    _check_split("procedural", split)
    images, labels = _procedural_images(PROCEDURAL_SIZES[split], resolution or 16, SPLITS.index(split))
    return TensorImageDataset("procedural", split, torch.from_numpy(images).unsqueeze(1),
                              torch.from_numpy(labels), 4, n=n, channels=channels)


# ---------------------------------------------------------------- CIFAR-10 (user files)
@DATASETS.register("cifar10", description="CIFAR-10 from files you have (cifar10:<root>, or "
                                          "$VQBENCH_DATA/cifar10): 32x32 RGB, 10 classes, 50k / 10k")
def cifar10(split: str, resolution: int | None = None, channels: int | None = None,
            n: int | None = None, root: str | None = None) -> TensorImageDataset:
    _check_split("cifar10", split)
    if root:
        folder = Path(root).expanduser()
    elif os.environ.get("VQBENCH_DATA"):
        folder = Path(os.environ["VQBENCH_DATA"]).expanduser() / "cifar10"
    else:
        folder = _cache_root() / "data" / "cifar10"
    try:
        from torchvision.datasets import CIFAR10
    except (ImportError, RuntimeError) as e:     # a torch/torchvision mismatch raises RuntimeError
        raise VQBenchError(f"cifar10 needs a working torchvision ({e}); {SETUP_HINT}") from None
    try:
        raw = CIFAR10(str(folder), train=split == "train", download=False)
    except RuntimeError:
        raise VQBenchError(f"CIFAR-10 not found under {folder} (expected {folder / 'cifar-10-batches-py'}; "
                           "fetch it with torchvision.datasets.CIFAR10(root, download=True) on a machine "
                           "with internet, then use cifar10:<root> or set VQBENCH_DATA)") from None
    images = torch.from_numpy(raw.data).permute(0, 3, 1, 2).contiguous()
    return TensorImageDataset("cifar10", split, images, torch.tensor(raw.targets), 10, n=n,
                              resolution=resolution, channels=channels)


# ---------------------------------------------------------------- image folders (ImageNet, ...)
def center_crop_arr(pil_image, image_size: int) -> np.ndarray:
    """ADM's (guided-diffusion) center crop: BOX-halve while large, BICUBIC to size, crop the center."""
    from PIL import Image
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top: top + image_size, left: left + image_size]


def _show(path) -> str:
    """A path for a one-line message: as is, or quoted when its name holds control characters."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(_show(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _plural(k: int, word: str) -> str:
    return f"{k} {word}" if k == 1 else f"{k} {word}s"


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


class _Listing:
    """A folder's visible entries (names not starting with '.'), sorted by name: image files,
    subfolders (a folder named like an image is a folder) and other entries (any other file,
    a broken symbolic link, a FIFO/socket/device)."""

    def __init__(self, folder: Path):
        self.folder, self.images, self.dirs, self.others = folder, [], [], []
        try:
            with os.scandir(folder) as it:        # scandir: ImageNet's 1.28M files list in seconds
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            raise VQBenchError(f"imagefolder: cannot list {_show(folder)} ({_why(e)}); make it readable "
                               "(chmod u+rx) or remove it") from None
        for e in entries:
            try:
                is_dir = e.is_dir()               # follows symbolic links; a loop raises ELOOP
                is_file = not is_dir and e.is_file()
            except OSError as err:
                raise VQBenchError(f"imagefolder: cannot open {_show(e.path)} ({_why(err)}); fix or "
                                   "remove it") from None
            if is_dir:
                self.dirs.append(e.name)
            elif is_file and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                self.images.append(e.name)
            else:
                self.others.append(e.name)


def _not_an_image(path: Path) -> str:
    """Why a non-image entry is not used."""
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    if not path.is_file():
        return "not a regular file"
    ext = os.path.splitext(path.name)[1]
    return f"its extension {ext!r} is not an image extension" if ext else "it has no image extension"


def _scan_image_folder(root: Path, base: Path, split: str,
                       metadata_files: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(file, label)]) of ``root`` under the rules in ImageFolderDataset's docstring;
    ``metadata_files``: file names at the top level that belong to the set (a captions file), not refused."""
    top = _Listing(root)
    top.others = [f for f in top.others if f not in metadata_files]
    if top.images and top.dirs:
        named = [d for d in top.dirs if os.path.splitext(d)[1].lower() in IMAGE_EXTENSIONS]
        hint = f" ({_names(named)}: a folder named like an image is still a folder)" if named else ""
        raise VQBenchError(f"imagefolder: {_show(root)} has {_plural(len(top.images), 'image')} at its top "
                           f"level and {_plural(len(top.dirs), 'subfolder')} ({_names(top.dirs)}){hint}; "
                           "put the images in class folders or remove the subfolders")
    classes = top.dirs
    files: list[tuple[Path, int]] = [(root / f, -1) for f in top.images]
    others = [root / f for f in top.others]
    for label, c in enumerate(classes):
        cdir = root / c
        sub = _Listing(cdir)
        if sub.dirs:
            hint = ""
            if root == base and c in SPLITS and c != split:
                hint = (f" ({_show(base / split)} does not exist, so {_show(base)} was read as class "
                        f"folders; add the {split} split folder or point at a folder of class folders)")
            raise VQBenchError(f"imagefolder: class folder {_show(cdir)} has "
                               f"{_plural(len(sub.dirs), 'subfolder')} ({_names(sub.dirs)}); a class folder "
                               f"holds image files only (<folder>/<class>/<image>){hint}")
        files += [(cdir / f, label) for f in sub.images]
        others += [cdir / f for f in sub.others]
    where = f"{_show(root)} or its class folders" if classes else _show(root)
    accepted = f"accepted extensions: {', '.join(IMAGE_EXTENSIONS)}"
    if not files:
        found = (f"found {_plural(len(others), 'non-image file')}, first {_show(others[0])}; "
                 if others else "")
        raise VQBenchError(f"imagefolder: no images in {where} ({found}{accepted}; hidden names starting "
                           "with '.' are skipped)")
    if others:
        inside = f"{_show(root)} and its class folders" if classes else _show(root)
        count = (f"it is 1 of {len(others)} non-image entries in {inside}: remove them or hide them"
                 if len(others) > 1 else "remove it or hide it")
        raise VQBenchError(f"imagefolder: {_show(others[0])} is not an image ({_not_an_image(others[0])}); "
                           f"{count} with a name starting with '.' ({accepted})")
    return classes, files


GRAY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class _Unsupported(Exception):
    """An image that decodes but has no sensible 8-bit RGB/L reading."""


def _white_background(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 colour (H x W x C) and alpha (H x W x 1) composited on white, rounded."""
    c, a = color.astype(np.uint32), alpha.astype(np.uint32)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _colour_key(transparency, k: int) -> bool:
    """Whether ``transparency`` is a usable 8-bit colour key of k samples (else it is ignored)."""
    values = (transparency,) if k == 1 else transparency
    return (isinstance(values, tuple) and len(values) == k
            and all(isinstance(v, int) and 0 <= v <= 255 for v in values))


def to_rgb_or_l(im):
    """A decoded PIL image -> an 8-bit "L" (gray sources) or "RGB" image; see ImageFolderDataset."""
    from PIL import Image
    mode, transparency = im.mode, im.info.get("transparency")
    if mode == "F":
        raise _Unsupported("a 32-bit floating-point image (mode F); save it as 8- or 16-bit")
    if mode in GRAY_16BIT_MODES:
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _Unsupported(f"a 32-bit integer image (mode {mode}) with values outside 0..65535; "
                               "save it as 8- or 16-bit")
        gray = (a.astype(np.uint32) >> 8).astype(np.uint8)          # keep the high byte
        if isinstance(transparency, int):
            gray[a == transparency] = 255                             # tRNS: that value is transparent
        return Image.fromarray(gray, "L")
    if mode == "1":
        return im.convert("L")
    if mode in ("L", "RGB") and _colour_key(transparency, 1 if mode == "L" else 3):
        a = np.array(im)                                              # tRNS colour key: -> white
        key = a == np.asarray(transparency, dtype=a.dtype)
        a[key if mode == "L" else key.all(-1)] = 255
        return Image.fromarray(a, mode)
    if mode in ("L", "RGB"):
        return im
    if mode in ("LA", "La"):
        a = np.asarray(im.convert("LA") if mode == "La" else im)
        return Image.fromarray(_white_background(a[..., :1], a[..., 1:])[..., 0], "L")
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and (transparency is not None
                                                         or getattr(im.palette, "mode", "") == "RGBA")):
        a = np.asarray(im.convert("RGBA") if mode != "RGBA" else im)
        return Image.fromarray(_white_background(a[..., :3], a[..., 3:]), "RGB")
    try:                                   # P, CMYK, YCbCr, RGBX, ...: Pillow's own conversion
        return im.convert("RGB")
    except ValueError as e:
        raise _Unsupported(f"mode {mode} cannot be converted to RGB ({e})") from None


def decode_image(path: Path, resolution: int, channels: int) -> torch.Tensor:
    """uint8 ``channels`` x res x res of the image file at ``path``; VQBenchError naming it."""
    import struct
    import zlib
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im.load()                                   # decode now: a truncated file fails here
            im = ImageOps.exif_transpose(im)            # EXIF Orientation, before the crop
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError,
            TypeError, KeyError, Image.DecompressionBombError) as e:
        detail = (str(e).splitlines() or [""])[0]
        raise VQBenchError(f"cannot read image {_show(path)} ({type(e).__name__}: {detail}); remove or "
                           "replace the file") from None
    try:
        arr = center_crop_arr(to_rgb_or_l(im), resolution)
    except _Unsupported as e:
        raise VQBenchError(f"cannot use image {_show(path)}: it is {e}") from None
    if arr.ndim == 2:                                   # gray source: the exact value in each channel
        return torch.from_numpy(np.ascontiguousarray(arr))[None].expand(channels, -1, -1)
    return convert_channels(torch.from_numpy(arr).permute(2, 0, 1)[None], channels)[0]


class ImageFolderDataset(ImageDataset):
    """Images of a folder, labelled by class folder; the rules (README, Data):

    - The folder read is ``<path>/<split>`` when that folder exists, else ``<path>`` itself.
    - Names starting with '.' (files and folders) are skipped everywhere.
    - Image files at its top level and no subfolders: a flat, unlabelled set (labels -1).
      Subfolders and no top-level images: one class per subfolder, labels 0.. in sorted name order;
      a class folder holds image files only (no subfolders) and may be empty (its label is kept).
      Both: refused. A folder is a folder whatever its name (``cat.png/`` is a subfolder).
    - Every other entry (a non-image file, a broken symbolic link, ...) is refused by name, so each
      file is used or refused; an unreadable folder or a symbolic-link loop is refused by name.
    - Decoding (when a batch is loaded; a file that cannot be decoded is refused by name): the EXIF
      Orientation is applied first; 16-bit gray (I;16, and I within 0..65535) keeps the high byte
      (v >> 8, as Pillow does for 16-bit RGB/RGBA PNGs); palette images take their palette colours;
      transparency (RGBA, LA, P or colour-key tRNS) is composited on white; CMYK and other modes use
      Pillow's conversion to RGB; float (F) images are refused. Gray sources serve their exact
      value in every channel; colour sources asked for 1 channel get the ITU-R 601 luma. Then the
      ADM center crop to ``resolution``. Embedded ICC profiles are not applied.
    """

    metadata_files: tuple[str, ...] = ()          # top-level files of a subclass's format (captions.jsonl)

    def __init__(self, path: str, split: str, resolution: int | None = None,
                 channels: int | None = None, n: int | None = None):
        base = Path(path).expanduser()
        try:
            st = os.stat(base)
        except FileNotFoundError:
            raise VQBenchError(f"imagefolder: {_show(base)} is not a folder (it does not exist)") from None
        except OSError as e:
            raise VQBenchError(f"imagefolder: cannot open {_show(base)} ({_why(e)}); fix the path or its "
                               "permissions") from None
        if not stat.S_ISDIR(st.st_mode):
            raise VQBenchError(f"imagefolder: {_show(base)} is not a folder (it is a file)")
        root = base / split if (base / split).is_dir() else base
        classes, files = _scan_image_folder(root, base, split, self.metadata_files)
        self.files = [files[i] for i in subset_order(len(files), n).tolist()]
        self.name, self.split, self.root = f"imagefolder:{base}", split, root
        self.classes, self.num_classes = classes, len(classes)
        self.resolution, self.channels = resolution or 256, channels or 3
        if self.channels not in (1, 3):
            raise VQBenchError(f"imagefolder serves 1 or 3 channels, not {self.channels}")

    def __len__(self) -> int:
        return len(self.files)

    def load_uint8(self, i: int) -> torch.Tensor:
        """uint8 C x res x res of image i; VQBenchError naming the file if it cannot be decoded."""
        return decode_image(self.files[i][0], self.resolution, self.channels)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices).reshape(-1).tolist()
        images = torch.stack([self.load_uint8(i) for i in idx])
        return to_float(images), torch.tensor([self.files[i][1] for i in idx], dtype=torch.long)

    def labels_at(self, indices) -> torch.Tensor:
        return torch.tensor([self.files[i][1] for i in torch.as_tensor(indices).reshape(-1).tolist()],
                            dtype=torch.long)


@DATASETS.register("imagefolder", description="imagefolder:<path> - ImageNet-style class folders or a flat "
                                              "folder, RGB, ADM center crop to the resolution (default 256)")
def imagefolder(split: str, resolution: int | None = None, channels: int | None = None,
                n: int | None = None, root: str | None = None) -> ImageFolderDataset:
    if not root:
        raise VQBenchError("imagefolder needs a path: imagefolder:/path/to/images")
    return ImageFolderDataset(root, split, resolution, channels, n)


# ---------------------------------------------------------------- entry point
def open_dataset(spec: str, split: str, *, resolution: int | None = None, channels: int | None = None,
                 n: int | None = None, root: str | None = None) -> ImageDataset:
    """Open a registered dataset by ``spec`` (a name, or ``name:<root>``); see the module docstring."""
    name, _, arg = spec.partition(":")
    factory = DATASETS.get(name)          # unknown names raise VQBenchError with suggestions
    if resolution is not None and resolution <= 0:
        raise VQBenchError(f"resolution must be positive (got {resolution})")
    if channels not in (None, 1, 3):
        raise VQBenchError(f"channels must be 1 or 3 (got {channels})")
    if n is not None and n <= 0:
        raise VQBenchError(f"the number of images must be positive (got n={n})")
    return factory(split, resolution=resolution, channels=channels, n=n, root=arg or root)
