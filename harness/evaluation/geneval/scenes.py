"""Synthetic GenEval scenes with known ground truth: flat coloured shapes standing in for objects.

They prove the scorer, not a model: each scene is drawn for a prompt, either satisfying it or with
one deliberate defect (``DEFECTS``), and a JSON sidecar records every object (class, colour, box,
shape, the confidence a detector should report). Read back through the test doubles of
``backends.py`` the expected GenEval verdict of every image is known before scoring.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.core.errors import VQBenchError
from harness.core.io import write_atomic
from harness.evaluation.geneval.prompts import COLORS, write_prompt_folder

PALETTE = {"red": (220, 20, 20), "orange": (255, 140, 0), "yellow": (245, 225, 0), "green": (30, 160, 40),
           "blue": (30, 60, 220), "purple": (130, 40, 170), "pink": (255, 150, 200), "brown": (120, 70, 20),
           "black": (10, 10, 10), "white": (250, 250, 250)}
BACKGROUND = (190, 210, 225)          # not a palette colour
SIZE, OBJECT_SIDE = 256, 60
CONFIDENT = 0.95                      # above both GenEval thresholds

# defect -> whether GenEval must still judge the image correct
DEFECTS = {
    None: True,
    "missing": False,              # the last include clause's object is not drawn
    "count_low": False,            # counting: one object fewer than asked
    "count_high": False,           # counting: one more (the exclude clause)
    "extra_at_0.5": True,          # counting: an extra object at confidence 0.5 (below 0.9: not counted)
    "one_at_0.5": False,           # counting: one of the asked objects at 0.5 (not counted)
    "presence_at_0.5": True,       # any other task: every object at 0.5 (above 0.3: present)
    "below_0.3": False,            # every object at confidence 0.25 (not detected)
    "wrong_color": False,          # the first coloured object gets another colour
    "swapped_colors": False,       # colour attribution: the two objects' colours exchanged
    "wrong_position": False,       # position: the object on the opposite side of its reference
}


@dataclass(frozen=True)
class SceneObject:
    label: str
    color: str
    box: tuple[int, int, int, int]
    shape: str = "ellipse"             # or "rect"
    score: float = CONFIDENT


def render(objects: list[SceneObject], size: int = SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in objects:
        _draw_shape(draw, o, PALETTE[o.color])
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, o: SceneObject, fill) -> None:
    # boxes are half-open [x1, x2) like crops; PIL's shapes include their last pixel
    x1, y1, x2, y2 = o.box
    (draw.ellipse if o.shape == "ellipse" else draw.rectangle)((x1, y1, x2 - 1, y2 - 1), fill=fill)


def shape_mask(o: SceneObject, size: tuple[int, int]) -> np.ndarray:
    """Boolean H x W mask of the drawn shape (what an instance-segmentation detector would return)."""
    mask = Image.new("L", size, 0)
    _draw_shape(ImageDraw.Draw(mask), o, 255)
    return np.asarray(mask) > 0


def write_scene(png_path: Path, objects: list[SceneObject], size: int = SIZE) -> Image.Image:
    image = render(objects, size)
    write_atomic(png_path.with_suffix(".json"),
                 json.dumps({"size": [size, size], "objects": [asdict(o) for o in objects]}).encode())
    return image


def read_sidecar(path: Path) -> list[SceneObject]:
    try:
        data = json.loads(Path(path).read_text())
        return [SceneObject(o["label"], o["color"], tuple(o["box"]), o["shape"], float(o["score"]))
                for o in data["objects"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise VQBenchError(f"{path} is not a synthetic-scene sidecar (objects with label, color, box, "
                           "shape, score)") from None


# ---------------------------------------------------------------- scenes for prompts
def _cell_box(cell: int, side: int = OBJECT_SIDE) -> tuple[int, int, int, int]:
    """Box centred in one cell of a 3 x 3 grid (cells 0..8, row-major)."""
    pitch = SIZE // 3
    cx, cy = (cell % 3) * pitch + pitch // 2, (cell // 3) * pitch + pitch // 2
    return (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)


# reference in the centre cell (4); the other object in the cell that stands in the relation to it
_RELATION_CELL = {"left of": 3, "right of": 5, "above": 1, "below": 7}
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def scene_for(record: dict, defect: str | None, rng: np.random.Generator) -> list[SceneObject]:
    """Objects of a scene for GenEval ``record``, satisfying it unless ``defect`` says otherwise."""
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}")
    tag, include = record["tag"], record["include"]
    other_color = lambda: COLORS[int(rng.integers(len(COLORS)))]        # noqa: E731
    shape = lambda: ("ellipse", "rect")[int(rng.integers(2))]           # noqa: E731
    cells = list(rng.permutation(9))
    objects: list[SceneObject] = []
    if tag == "position":
        (ref, obj) = include
        relation = obj["position"][0]
        if defect == "wrong_position":
            relation = _OPPOSITE[relation]
        objects = [SceneObject(ref["class"], other_color(), _cell_box(4), shape()),
                   SceneObject(obj["class"], other_color(), _cell_box(_RELATION_CELL[relation]), shape())]
    elif tag == "counting":
        n = include[0]["count"] + {"count_low": -1, "count_high": 1, "extra_at_0.5": 1}.get(defect, 0)
        objects = [SceneObject(include[0]["class"], other_color(), _cell_box(int(c)), shape()) for c in cells[:n]]
        if defect in ("extra_at_0.5", "one_at_0.5"):
            objects[-1] = _with(objects[-1], score=0.5)
    else:
        for clause, cell in zip(include, cells):
            objects.append(SceneObject(clause["class"], clause.get("color") or other_color(),
                                       _cell_box(int(cell)), shape()))
        if defect == "wrong_color":
            asked = objects[0].color
            objects[0] = _with(objects[0], color=next(c for c in COLORS[::-1] if c != asked))
        elif defect == "swapped_colors":
            a, b = objects
            objects = [_with(a, color=b.color), _with(b, color=a.color)]
    if defect == "missing":
        objects = objects[:-1]
    elif defect == "presence_at_0.5":
        objects = [_with(o, score=0.5) for o in objects]
    elif defect == "below_0.3":
        objects = [_with(o, score=0.25) for o in objects]
    return objects


def _with(o: SceneObject, **changes) -> SceneObject:
    return SceneObject(**(asdict(o) | changes))


def write_synthetic_samples(samples_dir: str | Path, records: list[dict],
                            defects: dict[tuple[int, int], str], images_per_prompt: int = 4,
                            seed: int = 0) -> list[dict]:
    """A GenEval samples folder of synthetic scenes; ``defects[(prompt, image)]`` names the defect of
    that image (absent: a correct scene). Returns, per image, its folder index, image index, tag and
    the verdict GenEval must reach."""
    rng = np.random.default_rng(seed)
    expected = []
    for p, record in enumerate(records):
        images = []
        folder = Path(samples_dir) / f"{p:05d}" / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_prompt):
            defect = defects.get((p, i))
            images.append(write_scene(folder / f"{i:04d}.png", scene_for(record, defect, rng)))
            expected.append({"prompt": p, "image": i, "tag": record["tag"], "defect": defect,
                             "correct": DEFECTS[defect]})
        write_prompt_folder(samples_dir, p, record, images)
    return expected
