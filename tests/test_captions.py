"""Captioned datasets (issue #16, item 1): ``captions:<folder>`` (an image folder + captions.jsonl) and
``fashion-mnist-captions``. The error rules are in the bad-input catalogue (bad_input_cases/captions.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.core.errors import VQBenchError
from harness.data.datasets import open_dataset


def _image(path, value: int):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _jsonl(path, entries):
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n\n")      # a blank line is skipped


def test_flat_folder_serves_each_image_with_its_captions(tmp_path):
    for i in range(6):
        _image(tmp_path / f"im{i}.png", 40 * i)
    entries = [{"image": f"im{i}.png", "captions": [f"gray level {40 * i}", f"image {i}"]} for i in range(5)]
    entries.append({"image": "im5.png", "caption": "  the brightest one "})
    _jsonl(tmp_path / "captions.jsonl", entries)
    ds = open_dataset(f"captions:{tmp_path}", "train", resolution=8)
    assert len(ds) == 6 and ds.name == f"captions:{tmp_path}"
    images, labels = ds.batch(torch.arange(6))
    assert labels.tolist() == [-1] * 6
    caps = ds.captions(torch.arange(6))
    assert caps[5] == ("the brightest one",)
    for i in range(5):                       # each caption belongs to the image it is served with
        level = round((images[i, 0, 0, 0].item() + 1) * 127.5)
        assert caps[i] == (f"gray level {level}", f"image {i}")
    # a subset keeps every image with its own captions
    sub = open_dataset(f"captions:{tmp_path}", "train", resolution=8, n=3)
    for img, cap in zip(sub.batch(torch.arange(3))[0], sub.captions(torch.arange(3))):
        if cap != ("the brightest one",):
            assert cap[0] == f"gray level {round((img[0, 0, 0].item() + 1) * 127.5)}"


def test_class_folders_under_a_split_with_their_own_captions_file(tmp_path):
    for split in ("train", "test"):
        for c, v in (("cat", 10), ("dog", 200)):
            _image(tmp_path / split / c / "x.png", v)
        _jsonl(tmp_path / split / "captions.jsonl",
               [{"image": f"{c}/x.png", "caption": f"a {c} ({split})"} for c in ("cat", "dog")])
    ds = open_dataset(f"captions:{tmp_path}", "test", resolution=8)
    assert ds.num_classes == 2 and ds.batch(torch.arange(2))[1].tolist() == [0, 1]
    assert ds.captions([0, 1]) == [("a cat (test)",), ("a dog (test)",)]


def test_hidden_image_cannot_be_captioned(tmp_path):
    _image(tmp_path / "a.png", 0)
    _image(tmp_path / ".b.png", 0)
    _jsonl(tmp_path / "captions.jsonl", [{"image": "a.png", "caption": "x"}, {"image": ".b.png", "caption": "y"}])
    with pytest.raises(VQBenchError, match=r"line 2: '\.b\.png' is captioned but is not one of the folder's images"):
        open_dataset(f"captions:{tmp_path}", "train")


def test_fashion_mnist_captions_name_the_label():
    from harness.data.captions import FMNIST_CAPTION_NAMES
    ds = open_dataset("fashion-mnist-captions", "test", n=200)
    plain = open_dataset("fashion-mnist", "test", n=200)
    images, labels = ds.batch(torch.arange(200))
    assert torch.equal(images, plain.batch(torch.arange(200))[0]) and torch.equal(labels, plain.labels)
    caps = ds.captions(torch.arange(200))
    for y, c in zip(labels.tolist(), caps):
        assert len(c) == 4 and all(FMNIST_CAPTION_NAMES[y] in text for text in c)
        # no caption names another class ("shirt" is inside "t-shirt": compare whole phrases)
        others = [n for n in FMNIST_CAPTION_NAMES if n != FMNIST_CAPTION_NAMES[y] and n not in FMNIST_CAPTION_NAMES[y]]
        assert not any(f" {n}" in text for text in c for n in others), c
    assert ds.captions([int((labels == 9).nonzero()[0])])[0][0] == "a photo of an ankle boot"
    assert ds.captions([int((labels == 5).nonzero()[0])])[0][1] == "a black-and-white picture of a sandal"


def test_captioned_datasets_are_listed():
    from harness.core.registry import DATASETS
    assert {"captions", "fashion-mnist-captions"} <= set(DATASETS.names())


def test_unicode_line_separators_inside_a_caption_are_kept(tmp_path):
    _image(tmp_path / "a.png", 0)
    caption = "first part\u2028second part\u0085third"
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "a.png", "caption": caption},
                                                        ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert open_dataset(f"captions:{tmp_path}", "train").captions([0]) == [(caption,)]


def test_two_links_to_one_file_are_two_images(tmp_path):
    _image(tmp_path / "a.png", 0)
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    _jsonl(tmp_path / "captions.jsonl", [{"image": "./a.png", "caption": "x"}, {"image": "b.png", "caption": "y"}])
    assert open_dataset(f"captions:{tmp_path}", "train").captions([0, 1]) == [("x",), ("y",)]
    _jsonl(tmp_path / "captions.jsonl", [{"image": "a.png", "caption": "x"}])
    with pytest.raises(VQBenchError, match=r"b\.png has no caption"):
        open_dataset(f"captions:{tmp_path}", "train")


def test_unknown_split_is_one_error():
    with pytest.raises(VQBenchError, match="splits train, test"):
        open_dataset("fashion-mnist-captions", "validation")
