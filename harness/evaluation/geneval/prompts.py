"""GenEval's prompt metadata and sample-folder layout (Ghosh et al. 2023, Sec. 3; its prompts/ folder).

Every prompt is one JSON object: ``tag`` (the task), ``prompt`` (the text), ``include`` (clauses
that must all hold: ``class``, ``count``, optionally ``color`` and ``position: [relation, group]``,
meaning "relative to the objects matched by include clause ``group``") and, for counting, an
``exclude`` clause (count + 1 of the class must *not* be detected).

``generate_metadata`` draws the prompts in GenEval's order with NumPy's PCG64 generator: all 80
classes once (single object), then ``n_per_task`` draws each of two objects, counting (2-4),
colours, position and colour attribution; exact duplicates are dropped, keeping the first. With
GenEval's seed 43 and 100 draws per task this is its published set: 553 prompts, per task
80 / 99 / 80 / 94 / 100 / 100 (``GENEVAL_PROMPT_COUNTS``; duplicates remove the rest).

Samples follow GenEval's layout (``SAMPLES_LAYOUT``): ``<dir>/<00000>/metadata.jsonl`` (that prompt's
metadata as one JSON object) and ``<dir>/<00000>/samples/0000.png ...`` (4 images per prompt).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import VQBenchError
from harness.core.io import write_atomic

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
IMAGES_PER_PROMPT = 4
GENEVAL_SEED = 43
GENEVAL_DRAWS_PER_TASK = 100
GENEVAL_PROMPT_COUNTS = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                         "position": 100, "color_attr": 100}

# GenEval's object_names.txt: the 80 COCO classes in COCO category order, with three names made
# unambiguous for text-to-image prompts (mouse, remote, keyboard).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
# COCO's own names where GenEval renamed a class (detectors trained on COCO report these)
COCO_NAME_TO_GENEVAL = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RELATIONS = ("left of", "right of", "above", "below")
MAX_COUNT = 4            # counting prompts ask for 2..4 objects
_UNCOLORED = COCO_CLASSES.index("person")      # GenEval writes no "a <colour> person" prompt

SAMPLES_LAYOUT = "<dir>/<00000>/metadata.jsonl and <dir>/<00000>/samples/0000.png ... (GenEval's layout)"


def with_article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def plural(name: str) -> str:
    return f"{name}es" if name.endswith("s") else f"{name}s"


def _colorable(rng: np.random.Generator, size: int | None = None):
    """Class indices other than person: a draw from the 79 others, shifted past person's index."""
    drawn = rng.choice(len(COCO_CLASSES) - 1, size=size, replace=False) + 1
    return (drawn + _UNCOLORED) % len(COCO_CLASSES)


def _two_object(rng):
    a, b = (COCO_CLASSES[i] for i in rng.choice(len(COCO_CLASSES), size=2, replace=False))
    return {"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
            "prompt": f"a photo of {with_article(a)} and {with_article(b)}"}


def _counting(rng):
    name = COCO_CLASSES[rng.choice(len(COCO_CLASSES))]
    n = int(rng.integers(2, MAX_COUNT, endpoint=True))
    return {"tag": "counting", "include": [{"class": name, "count": n}],
            "exclude": [{"class": name, "count": n + 1}],
            "prompt": f"a photo of {NUMBER_WORDS[n]} {plural(name)}"}


def _colors(rng):
    name = COCO_CLASSES[int(_colorable(rng))]
    color = COLORS[rng.choice(len(COLORS))]
    return {"tag": "colors", "include": [{"class": name, "count": 1, "color": color}],
            "prompt": f"a photo of {with_article(color)} {name}"}


def _position(rng):
    a, b = (COCO_CLASSES[i] for i in rng.choice(len(COCO_CLASSES), size=2, replace=False))
    relation = RELATIONS[rng.choice(len(RELATIONS))]
    # group 0 is the reference object b; a must stand in `relation` to it
    return {"tag": "position",
            "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
            "prompt": f"a photo of {with_article(a)} {relation} {with_article(b)}"}


def _color_attr(rng):
    a, b = (COCO_CLASSES[i] for i in _colorable(rng, size=2))
    ca, cb = (COLORS[i] for i in rng.choice(len(COLORS), size=2, replace=False))
    return {"tag": "color_attr",
            "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
            "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"}


def generate_metadata(seed: int = GENEVAL_SEED, n_per_task: int = GENEVAL_DRAWS_PER_TASK) -> list[dict]:
    """GenEval's prompt metadata; the defaults give its published 553 prompts (see the module doc).

    ``n_per_task`` draws are made for each task but single object (always the 80 classes);
    duplicates are dropped, so a task can hold fewer prompts than draws.
    """
    if n_per_task < 0:
        raise VQBenchError(f"prompts per task must be >= 0, not {n_per_task}")
    rng = np.random.default_rng(seed)
    drawn = [{"tag": "single_object", "include": [{"class": COCO_CLASSES[i], "count": 1}],
              "prompt": f"a photo of {with_article(COCO_CLASSES[i])}"}
             for i in rng.choice(len(COCO_CLASSES), size=len(COCO_CLASSES), replace=False)]
    for make in (_two_object, _counting, _colors, _position, _color_attr):
        drawn += [make(rng) for _ in range(n_per_task)]
    unique, seen = [], set()
    for record in drawn:
        key = canonical(record)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


def canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def prompt_set_id(records: list[dict]) -> str:
    """``geneval-553`` for GenEval's published prompts, else ``custom-<hash of the set>``."""
    keys = sorted(canonical(r) for r in records)
    if keys == sorted(canonical(r) for r in _published()):
        return "geneval-553"
    return "custom-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]


_PUBLISHED: list[dict] = []


def _published() -> list[dict]:
    if not _PUBLISHED:
        _PUBLISHED.extend(generate_metadata())
    return _PUBLISHED


def task_counts(records: list[dict]) -> dict[str, int]:
    counts = Counter(r["tag"] for r in records)
    return {t: counts[t] for t in TASKS if counts[t]}


# ---------------------------------------------------------------- files
def write_metadata(out_dir: str | Path, records: list[dict]) -> Path:
    """GenEval's prompt files: ``evaluation_metadata.jsonl`` (one record a line) and
    ``generation_prompts.txt`` (the prompt texts); returns the metadata path."""
    out_dir = Path(out_dir)
    for r in records:
        validate_record(r, f"record {r.get('prompt', '?')!r}")
    write_atomic(out_dir / "generation_prompts.txt", "".join(r["prompt"] + "\n" for r in records).encode())
    path = out_dir / "evaluation_metadata.jsonl"
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())
    return path


def read_metadata(path: str | Path) -> list[dict]:
    """Records of a metadata JSONL file, each validated (a bad line names the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise VQBenchError(f"GenEval metadata {path} does not exist (write it with `vqbench geneval-prompts --out DIR`)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            records.append(_parse(line, f"{path}:{number}"))
    if not records:
        raise VQBenchError(f"GenEval metadata {path} holds no prompts")
    return records


def _parse(text: str, where: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        raise VQBenchError(f"{where} is not valid JSON; expected one GenEval metadata object") from None
    validate_record(record, where)
    return record


def validate_record(record, where: str) -> None:
    def bad(why: str):
        raise VQBenchError(f"{where} is not GenEval metadata: {why}")
    if not isinstance(record, dict):
        bad("expected a JSON object")
    if record.get("tag") not in TASKS:
        bad(f"tag must be one of {', '.join(TASKS)}, not {record.get('tag')!r}")
    if not isinstance(record.get("prompt"), str):
        bad("no prompt text")
    clauses = record.get("include")
    if not isinstance(clauses, list) or not clauses:
        bad("no include clauses")
    for i, c in enumerate(clauses + list(record.get("exclude", []))):
        if not isinstance(c, dict) or not isinstance(c.get("class"), str) or not isinstance(c.get("count"), int):
            bad("every include/exclude clause needs a class name and an integer count")
        if "color" in c and c["color"] not in COLORS:
            bad(f"colour {c['color']!r} is not one of GenEval's {', '.join(COLORS)}")
        if "position" in c:
            pos = c["position"]
            if (not isinstance(pos, (list, tuple)) or len(pos) != 2 or pos[0] not in RELATIONS
                    or not isinstance(pos[1], int) or not 0 <= pos[1] < i):
                bad("position must be [relation, index of an earlier include clause]")


@dataclass(frozen=True)
class PromptSamples:
    """One prompt folder of a samples directory."""
    folder: Path
    metadata: dict
    images: tuple[Path, ...]


def sample_folder(samples_dir: str | Path, index: int) -> Path:
    return Path(samples_dir) / f"{index:05d}"


def write_prompt_folder(samples_dir: str | Path, index: int, record: dict, images) -> Path:
    """Save one prompt's generated images (PIL images) in GenEval's layout; returns the folder."""
    validate_record(record, f"record {index}")
    folder = sample_folder(samples_dir, index)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "metadata.jsonl", (json.dumps(record) + "\n").encode())
    for i, image in enumerate(images):
        buf = BytesIO()
        image.save(buf, format="PNG")
        write_atomic(folder / "samples" / f"{i:04d}.png", buf.getvalue())
    return folder


_IMAGE_NAME = re.compile(r"\d+\.png")


def find_samples(samples_dir: str | Path) -> list[PromptSamples]:
    """The prompt folders of ``samples_dir`` as GenEval reads them: numbered subfolders, each with a
    ``metadata.jsonl`` and ``samples/NNNN.png`` images (other files are ignored)."""
    root = Path(samples_dir)
    if not root.is_dir():
        raise VQBenchError(f"GenEval samples folder {root} does not exist; expected {SAMPLES_LAYOUT}")
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_path = folder / "metadata.jsonl"
        if not meta_path.is_file():
            raise VQBenchError(f"{folder} has no metadata.jsonl; expected {SAMPLES_LAYOUT}")
        # one JSON object (GenEval reads the whole file with json.load)
        metadata = _parse(meta_path.read_text(encoding="utf-8"), str(meta_path))
        images = tuple(sorted(p for p in (folder / "samples").glob("*.png") if _IMAGE_NAME.fullmatch(p.name)))
        found.append(PromptSamples(folder, metadata, images))
    if not found or not any(s.images for s in found):
        raise VQBenchError(f"no GenEval samples under {root}; expected {SAMPLES_LAYOUT}")
    return found
