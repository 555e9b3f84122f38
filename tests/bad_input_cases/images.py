"""Bad image folders given to `vqbench train --dataset imagefolder:<folder>` (issue #13, item 5).

Each case builds a folder under ``world.root`` and trains vq-tiny for one step on it with a batch
of one image, so the only image of the folder (the bad one) is decoded at the first step.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bad_input_cases import Case, World


def _train(world: World, folder: Path) -> list:
    return ["train", "vq-tiny", "--run-dir", world.root / "r", "--dataset", f"imagefolder:{folder}",
            "--set", "steps=1", "--set", "batch_size=1", "--quiet"]


def _image(path: Path, size: int = 16, seed: int = 0, **save) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(path, **save)
    return path


def _gray16(path: Path) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).save(path)
    return path


def _folder(world: World, name: str) -> Path:
    return world.root / "images" / name


# ---------------------------------------------------------------- folder layout
def mixed(world):
    folder = _folder(world, "mixed")
    _image(folder / "a.png")
    _image(folder / "b.png", seed=1)
    _image(folder / "cats" / "c.png", seed=2)
    return _train(world, folder)


def named_like_image(world):
    folder = _folder(world, "named")
    _image(folder / "top.png")
    _image(folder / "cat.png" / "inside.png", seed=1)         # a folder, whatever its name
    return _train(world, folder)


def empty(world):
    folder = _folder(world, "empty")
    folder.mkdir(parents=True)
    return _train(world, folder)


def missing(world):
    return _train(world, _folder(world, "missing"))


def a_file(world):
    return _train(world, _image(_folder(world, "single") / "one.png"))


def only_hidden(world):
    folder = _folder(world, "hidden")
    _image(folder / ".a.png")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return _train(world, folder)


def non_image_in_class(world):
    folder = _folder(world, "classes")
    _image(folder / "cat" / "a.png")
    (folder / "cat" / "notes.txt").write_text("not an image")
    return _train(world, folder)


def nested_class(world):
    folder = _folder(world, "nested")
    _image(folder / "cat" / "a.png")
    _image(folder / "cat" / "more" / "b.png", seed=1)
    return _train(world, folder)


def only_test_split(world):
    folder = _folder(world, "splits")
    _image(folder / "test" / "cat" / "a.png")                 # training asks for train/
    return _train(world, folder)


def broken_link(world):
    folder = _folder(world, "broken")
    _image(folder / "a.png")
    os.symlink(folder / "deleted.png", folder / "b.png")
    return _train(world, folder)


def link_loop(world):
    folder = _folder(world, "loop")
    _image(folder / "a.png")
    os.symlink("loop", folder / "loop")
    return _train(world, folder)


def dataset_is_link_loop(world):
    (world.root / "images").mkdir(exist_ok=True)
    os.symlink("self", _folder(world, "self"))
    return _train(world, _folder(world, "self"))


def unreadable(world):
    folder = _folder(world, "locked")
    _image(folder / "cat" / "a.png")
    (folder / "cat").chmod(0)
    return _train(world, folder)


# ---------------------------------------------------------------- files that do not decode
def truncated_png(world):
    path = _image(_folder(world, "truncated") / "t.png", size=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return _train(world, path.parent)


def text_as_png(world):
    path = _folder(world, "text") / "x.png"
    path.parent.mkdir(parents=True)
    path.write_text("hello, I am not a png")
    return _train(world, path.parent)


def empty_jpeg(world):
    path = _folder(world, "zero") / "z.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return _train(world, path.parent)


def corrupt_16bit_png(world):
    path = _gray16(_folder(world, "corrupt16") / "g16.png")
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 20
    data[start:start + 40] = bytes(b ^ 0xFF for b in data[start:start + 40])   # deflate stream
    path.write_bytes(bytes(data))
    return _train(world, path.parent)


def truncated_jpeg(world):
    path = _image(_folder(world, "truncjpg") / "t.jpg", size=64, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return _train(world, path.parent)


def float_tiff(world):
    from PIL import Image
    path = _folder(world, "float") / "f.tif"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(path)
    return _train(world, path.parent)


def _in(name: str, *parts: str):
    return lambda world: str(Path(world.root, "images", name, *parts))


CASES = [
    Case("imagefolder-mixed-top-level-and-subfolders", mixed, _in("mixed")),
    Case("imagefolder-folder-named-like-an-image", named_like_image, _in("named")),
    Case("imagefolder-empty-folder", empty, _in("empty")),
    Case("imagefolder-missing-folder", missing, _in("missing")),
    Case("imagefolder-path-is-a-file", a_file, _in("single", "one.png")),
    Case("imagefolder-only-hidden-files", only_hidden, _in("hidden")),
    Case("imagefolder-non-image-in-class-folder", non_image_in_class, _in("classes", "cat", "notes.txt")),
    Case("imagefolder-subfolder-in-class-folder", nested_class, _in("nested", "cat")),
    Case("imagefolder-no-train-split-folder", only_test_split, _in("splits", "train")),
    Case("imagefolder-broken-symlink", broken_link, _in("broken", "b.png")),
    Case("imagefolder-symlink-loop", link_loop, _in("loop", "loop")),
    Case("imagefolder-dataset-path-symlink-loop", dataset_is_link_loop, _in("self")),
    Case("imagefolder-truncated-png", truncated_png, _in("truncated", "t.png")),
    Case("imagefolder-text-file-named-png", text_as_png, _in("text", "x.png")),
    Case("imagefolder-zero-byte-jpeg", empty_jpeg, _in("zero", "z.jpg")),
    Case("imagefolder-corrupt-16bit-png", corrupt_16bit_png, _in("corrupt16", "g16.png")),
    Case("imagefolder-truncated-jpeg", truncated_jpeg, _in("truncjpg", "t.jpg")),
    Case("imagefolder-float-tiff", float_tiff, _in("float", "f.tif")),
]
if os.geteuid() != 0:                   # root reads a chmod 000 folder, so the case would not fail
    CASES.append(Case("imagefolder-unreadable-class-folder", unreadable, _in("locked", "cat")))
