"""Captioned image sets: images with one or more captions each, for text-conditioned generators.

- ``captions:<folder>``: an image folder (the ``imagefolder`` rules: ``<folder>/<split>`` when it
  exists, flat or class folders) plus ``captions.jsonl`` in the folder read, one JSON object per line:
  ``{"image": "<path relative to that folder>", "captions": ["...", ...]}`` (or ``"caption": "..."``).
  Every image has a line and every line an image; a caption is a non-empty string. Anything else is
  refused in one line naming the file and line (or the image): a line that is not a JSON object, a
  missing or empty caption, a caption for an image that is not in the folder, an image listed twice,
  an image without a caption. Blank lines are skipped.
- ``fashion-mnist-captions``: Fashion-MNIST with captions made from its labels and fixed templates
  ("a photo of a sandal", "a black-and-white picture of a pullover", ...): every image has all of
  its class's captions, so the caption says the class and nothing else.

Both serve ``batch(indices) -> (images, labels)`` like every dataset, plus ``captions(indices)``: the
tuple of captions of each image.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from harness.core.errors import VQBenchError
from harness.core.registry import DATASETS
from harness.data.datasets import (ImageFolderDataset, TensorImageDataset, _check_split, _show, fashion_mnist_arrays,
                                   subset_order)

CAPTIONS_FILE = "captions.jsonl"
FMNIST_CAPTION_NAMES = ("t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt",
                        "sneaker", "bag", "ankle boot")
FMNIST_TEMPLATES = ("a photo of {a} {name}", "a black-and-white picture of {a} {name}",
                    "a small grayscale image of {a} {name}", "{a} {name} on a black background")


def fashion_mnist_captions_of(label: int) -> tuple[str, ...]:
    name = FMNIST_CAPTION_NAMES[label]
    article = "an" if name[0] in "aeiou" else "a"
    return tuple(t.format(a=article, name=name) for t in FMNIST_TEMPLATES)


def _caption_list(entry: dict, where: str) -> tuple[str, ...]:
    if ("captions" in entry) == ("caption" in entry):
        raise VQBenchError(f"{where}: give exactly one of \"captions\" (a list) or \"caption\" (a string)")
    captions = entry["captions"] if "captions" in entry else [entry["caption"]]
    if not isinstance(captions, list) or not captions:
        raise VQBenchError(f"{where}: \"captions\" must be a non-empty list of strings")
    for k, c in enumerate(captions):
        if not isinstance(c, str):
            raise VQBenchError(f"{where}: caption {k + 1} is {type(c).__name__}, not a string")
        if not c.strip():
            raise VQBenchError(f"{where}: caption {k + 1} is empty; write the caption or remove it")
    return tuple(c.strip() for c in captions)


def image_key(path: Path | str) -> str:
    """How an image is matched to its captions line: its path normalised lexically (``a/./b`` and
    ``a/x/../b`` are ``a/b``), not resolved, so two links to one file stay two images."""
    return os.path.normpath(path)


def read_captions(path: Path, folder: Path) -> dict[str, tuple[tuple[str, ...], int, str]]:
    """``image_key`` of each image under ``folder`` -> (its captions, line number, path as written), from
    the JSON-lines file at ``path``."""
    if path.is_dir():
        raise VQBenchError(f"captions: {_show(path)} is a folder; it must be a file with one line per image")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VQBenchError(f"captions: {_show(path)} does not exist; write one line per image: "
                           '{"image": "<path under the folder>", "captions": ["..."]}') from None
    except (OSError, UnicodeDecodeError) as e:
        raise VQBenchError(f"captions: cannot read {_show(path)} ({e}); save it as UTF-8 text") from None
    out: dict[str, tuple[tuple[str, ...], int, str]] = {}
    # only "\n" ends a line: JSON strings may hold U+2028 and other characters splitlines() breaks at
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{_show(path)} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise VQBenchError(f"{where}: not JSON ({e.msg}); each line is one object with \"image\" and "
                               "\"captions\"") from None
        if not isinstance(entry, dict):
            raise VQBenchError(f"{where}: a JSON {type(entry).__name__}, not an object with \"image\" and "
                               "\"captions\"")
        image = entry.get("image")
        if not isinstance(image, str) or not image:
            raise VQBenchError(f"{where}: \"image\" must be the image's path under {_show(folder)} (a non-empty "
                               f"string), got {image!r}")
        file = folder / image
        if not file.is_file():
            raise VQBenchError(f"{where}: the image {image!r} does not exist in {_show(folder)}; fix the path "
                               "or remove the line")
        key = image_key(file)
        if key in out:
            raise VQBenchError(f"{where}: {image!r} is already captioned on line {out[key][1]}; "
                               "put all of its captions on one line")
        out[key] = (_caption_list(entry, where), number, image)
    return out


class CaptionedFolderDataset(ImageFolderDataset):
    """An ``imagefolder`` whose every image has captions in ``captions.jsonl`` (module docstring)."""

    metadata_files = (CAPTIONS_FILE,)

    def __init__(self, path: str, split: str, resolution: int | None = None, channels: int | None = None,
                 n: int | None = None):
        super().__init__(path, split, resolution, channels, n=None)
        self.name = f"captions:{Path(path).expanduser()}"
        captions_file = self.root / CAPTIONS_FILE
        table = read_captions(captions_file, self.root)
        served = {image_key(f) for f, _ in self.files}
        extra = next((v for k, v in table.items() if k not in served), None)
        if extra is not None:                    # a file the folder rules do not serve (hidden, outside it)
            raise VQBenchError(f"{_show(captions_file)} line {extra[1]}: {extra[2]!r} is captioned but is not one "
                               "of the folder's images (names starting with '.' are skipped, and an image must "
                               "lie inside the folder)")
        missing = [f for f, _ in self.files if image_key(f) not in table]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise VQBenchError(f"captions: {_show(missing[0])}{more} has no caption in "
                               f"{_show(self.root / CAPTIONS_FILE)}; add a line for it or remove the image")
        self.files = [self.files[i] for i in subset_order(len(self.files), n).tolist()]
        self._captions = [table[image_key(f)][0] for f, _ in self.files]

    def captions(self, indices) -> list[tuple[str, ...]]:
        return [self._captions[i] for i in torch.as_tensor(indices).reshape(-1).tolist()]


class FashionMNISTCaptions(TensorImageDataset):
    """Fashion-MNIST with templated captions of its labels (module docstring)."""

    def captions(self, indices) -> list[tuple[str, ...]]:
        return [fashion_mnist_captions_of(int(y)) for y in self.labels[torch.as_tensor(indices).reshape(-1)]]


@DATASETS.register("captions", description="captions:<path> - an image folder with captions.jsonl (one line "
                                           "per image: image path and its captions), for text conditioning")
def captions(split: str, resolution: int | None = None, channels: int | None = None,
             n: int | None = None, root: str | None = None) -> CaptionedFolderDataset:
    if not root:
        raise VQBenchError("captions needs a path: captions:/path/to/folder (with captions.jsonl)")
    return CaptionedFolderDataset(root, split, resolution, channels, n)


@DATASETS.register("fashion-mnist-captions", description="Fashion-MNIST with captions from its labels "
                                                         "(\"a photo of a sandal\", 4 templates per class)")
def fashion_mnist_captions(split: str, resolution: int | None = None, channels: int | None = None,
                           n: int | None = None, root: str | None = None) -> FashionMNISTCaptions:
    _check_split("fashion-mnist-captions", split)
    images, labels = fashion_mnist_arrays(split, root)
    return FashionMNISTCaptions("fashion-mnist-captions", split, images, labels, 10, n=n,
                                resolution=resolution, channels=channels)
