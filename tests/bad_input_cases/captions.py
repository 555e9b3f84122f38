"""Bad captioned folders given to `vqbench train --dataset captions:<folder>` (issue #16, item 1).

Each case builds a folder of two images and a captions.jsonl with one fault, and trains vq-tiny for
one step on it; the dataset is refused before training, in one line naming the file and line (or the image).
"""
from __future__ import annotations

import json
from pathlib import Path

from bad_input_cases import Case, World
from bad_input_cases.images import _image


def _folder(world: World, name: str, lines: list[str] | None) -> Path:
    folder = world.root / "captioned" / name
    _image(world.root / "captioned" / "outside" / "c.png", seed=2)      # an image beside the folder
    _image(folder / "a.png")
    _image(folder / "b.png", seed=1)
    if lines is not None:
        (folder / "captions.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def _train(world: World, name: str, lines: list[str] | None) -> list:
    folder = _folder(world, name, lines)
    return ["train", "vq-tiny", "--run-dir", world.root / "r", "--dataset", f"captions:{folder}",
            "--set", "steps=1", "--set", "batch_size=1", "--quiet"]


def _line(image: str, *captions) -> str:
    return json.dumps({"image": image, "captions": list(captions)})


GOOD_B = _line("b.png", "a picture of noise")


def _case(name: str, lines: list[str] | None, culprit: str) -> Case:
    return Case(f"captions-{name}", lambda world: _train(world, name, lines),
                lambda world: culprit.format(folder=Path(world.root, "captioned", name)))


CASES = [
    _case("file-missing", None, "{folder}/captions.jsonl"),
    _case("line-not-json", [_line("a.png", "x"), "{image: b.png}"], "{folder}/captions.jsonl line 2"),
    _case("line-not-an-object", [_line("a.png", "x"), '["b.png", "noise"]'], "captions.jsonl line 2"),
    _case("image-key-missing", [json.dumps({"captions": ["x"]}), GOOD_B], "captions.jsonl line 1"),
    _case("image-not-a-string", [json.dumps({"image": 5, "captions": ["x"]}), GOOD_B],
          "captions.jsonl line 1: \"image\" must be"),
    _case("image-outside-the-folder", [_line("a.png", "x"), GOOD_B, _line("../outside/c.png", "y")],
          "captions.jsonl line 3: '../outside/c.png' is captioned but is not one of the folder's images"),
    _case("caption-for-missing-image", [_line("a.png", "x"), GOOD_B, _line("c.png", "y")],
          "captions.jsonl line 3: the image 'c.png'"),
    _case("image-without-caption", [GOOD_B], "{folder}/a.png"),
    _case("empty-caption", [_line("a.png", "x", "  "), GOOD_B], "captions.jsonl line 1: caption 2 is empty"),
    _case("empty-caption-list", [_line("a.png"), GOOD_B], "captions.jsonl line 1"),
    _case("caption-not-a-string", [_line("a.png", 3), GOOD_B], "captions.jsonl line 1: caption 1 is int"),
    _case("image-captioned-twice", [_line("a.png", "x"), GOOD_B, _line("a.png", "y")],
          "captions.jsonl line 3: 'a.png' is already captioned on line 1"),
    _case("caption-and-captions", [json.dumps({"image": "a.png", "caption": "x", "captions": ["y"]}), GOOD_B],
          "captions.jsonl line 1"),
]
