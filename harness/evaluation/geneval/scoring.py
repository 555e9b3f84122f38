"""GenEval's scoring rules (Ghosh et al. 2023, Sec. 3.2 and its evaluation/ scripts), per image:

1. Detections of each class are kept above a confidence threshold (strictly: 0.3, or 0.9 for every
   class in a counting image), most confident first, at most 16 per class; an optional greedy
   overlap filter drops a detection whose IoU with a kept one of its class reaches ``max_overlap``
   (GenEval's default 1.0 turns it off: its Mask2Former needs no NMS).
2. Every ``include`` clause must hold (AND): the ``count`` most confident detections of its class
   exist; if it names a colour, each of those objects is classified by CLIP over its crop (the
   instance mask pasted on grey #999, cropped to the box) and at least ``count`` must be that
   colour; if it names a position, each of them must stand in that relation to every object of the
   referenced clause (which must itself have matched). An ``exclude`` clause fails the image when
   ``count`` or more objects of its class are detected (OR).
3. Relative position of A to B: the box-centre offset with each axis shrunk by ``position_margin``
   times the two boxes' summed extent on that axis (towards 0); none if both shrink to 0, else
   ``left of`` / ``right of`` / ``above`` / ``below`` where the shrunk offset over the unshrunk
   offset's length is below -0.5 / above 0.5 (image y grows downwards).

A task's accuracy is the fraction of its images judged correct; the GenEval score is the mean of
the task accuracies (tasks weigh equally whatever their prompt counts).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from harness.core.errors import VQBenchError
from harness.evaluation.geneval.backends import ColorClassifier, Detection, Detector
from harness.evaluation.geneval.prompts import COLORS, IMAGES_PER_PROMPT, TASKS, canonical, find_samples


@dataclass(frozen=True)
class ScoringRules:
    """GenEval's defaults (its evaluate_images.py options of the same meaning)."""
    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0          # 1.0: no overlap filtering
    position_margin: float = 0.1
    crop_background: str = "#999"     # colour pasted outside an object's mask before cropping


def box_iou(a, b) -> float:
    """IoU with GenEval's inclusive pixel convention (a box spans x2 - x1 + 1 pixels)."""
    def area(x1, y1, x2, y2):
        return max(x2 - x1 + 1, 0) * max(y2 - y1 + 1, 0)
    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a[:4]) + area(*b[:4]) - inter
    return inter / union if union else 0.0


def keep_detections(detections: list[Detection], tag: str, rules: ScoringRules) -> dict[str, list[Detection]]:
    """Step 1: class -> kept detections, most confident first (classes with none are absent)."""
    threshold = rules.counting_threshold if tag == "counting" else rules.threshold
    kept: dict[str, list[Detection]] = {}
    for label in dict.fromkeys(d.label for d in detections):
        ranked = sorted((d for d in detections if d.label == label and d.score > threshold),
                        key=lambda d: -d.score)[:rules.max_objects]
        chosen: list[Detection] = []
        for d in ranked:
            if rules.max_overlap >= 1 or all(box_iou(d.box, k.box) < rules.max_overlap for k in chosen):
                chosen.append(d)
        if chosen:
            kept[label] = chosen
    return kept


def relative_position(a, b, margin: float = 0.1) -> set[str]:
    """Step 3: the relations of box ``a`` to box ``b`` (x1, y1, x2, y2)."""
    a, b = np.asarray(a[:4], float).reshape(2, 2), np.asarray(b[:4], float).reshape(2, 2)
    offset = a.mean(0) - b.mean(0)
    extent = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])
    shrunk = np.maximum(np.abs(offset) - margin * extent, 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    return {name for name, holds in (("left of", dx < -0.5), ("right of", dx > 0.5),
                                     ("above", dy < -0.5), ("below", dy > 0.5)) if holds}


def object_crop(image: Image.Image, detection: Detection, background: str = "#999") -> Image.Image:
    """The object's box, with everything outside its instance mask (if any) painted ``background``."""
    image = image.convert("RGB")
    if detection.mask is not None:
        mask = np.asarray(detection.mask, dtype=bool)
        if mask.shape != (image.height, image.width):
            raise VQBenchError(f"detector returned a {mask.shape} mask for a {image.width}x{image.height} image")
        image = Image.composite(image, Image.new("RGB", image.size, background),
                                Image.fromarray(mask.astype(np.uint8) * 255))
    return image.crop(tuple(round(v) for v in detection.box))


def judge(image: Image.Image, kept: dict[str, list[Detection]], metadata: dict,
          colors: ColorClassifier, rules: ScoringRules) -> tuple[bool, list[str]]:
    """Step 2: whether the kept detections satisfy ``metadata``, and the reasons when not."""
    correct, reasons = True, []
    matched: list[list[Detection] | None] = []          # per include clause: its objects, or None
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = kept.get(name, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        if ok and "color" in clause:
            seen = colors.classify([object_crop(image, d, rules.crop_background) for d in found], name)
            if seen.count(clause["color"]) < count:
                ok = False
                reasons.append(f"expected {clause['color']} {name}>={count}, found "
                               + ", ".join(f"{seen.count(c)} {c}" for c in COLORS if c in seen))
        if ok and "position" in clause:
            relation, group = clause["position"]
            targets = matched[group]
            if targets is None:
                ok = False
                reasons.append(f"no target for {name} to be {relation}")
            else:
                for d in found:
                    bad = next((t for t in targets if relation not in
                                (rels := relative_position(d.box, t.box, rules.position_margin))), None)
                    if bad is not None:
                        ok = False
                        reasons.append(f"expected {name} {relation} target, found "
                                       f"{' and '.join(sorted(rels)) or 'no relation to the'} target")
                        break
        correct &= ok
        matched.append(found if ok else None)
    for clause in metadata.get("exclude", []):
        n = len(kept.get(clause["class"], []))
        if n >= clause["count"]:
            correct = False
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {n}")
    return correct, reasons


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except OSError as e:
        raise VQBenchError(f"cannot read image {path}: {e}") from None


def score_image(path: Path, metadata: dict, detector: Detector, colors: ColorClassifier,
                rules: ScoringRules = ScoringRules()) -> dict:
    """One row of GenEval's per-image results (filename, tag, prompt, correct, reason, ...)."""
    image = load_image(path)
    kept = keep_detections(detector.detect(image, path), metadata["tag"], rules)
    correct, reasons = judge(image, kept, metadata, colors, rules)
    return {"filename": str(path), "tag": metadata["tag"], "prompt": metadata["prompt"],
            "correct": bool(correct), "reason": "\n".join(reasons), "metadata": canonical(metadata),
            "details": json.dumps({k: [[*map(float, d.box), d.score] for d in v] for k, v in kept.items()})}


def evaluate_samples(samples_dir: str | Path, detector: Detector, colors: ColorClassifier,
                     rules: ScoringRules = ScoringRules(), progress: bool = False) -> list[dict]:
    """Per-image results for every image of a GenEval samples folder."""
    prompts = find_samples(samples_dir)
    jobs = [(path, p.metadata) for p in prompts for path in p.images]
    if progress:
        from tqdm import tqdm
        jobs = tqdm(jobs, desc="geneval", unit="img")
    return [score_image(path, meta, detector, colors, rules) for path, meta in jobs]


@dataclass(frozen=True)
class Summary:
    task_accuracy: dict[str, float]          # in TASKS order, tasks present only
    task_images: dict[str, int]
    overall: float                           # mean of the task accuracies
    n_images: int
    n_prompts: int
    images_correct: float                    # fraction of all images correct
    prompts_correct: float                   # fraction of prompts with at least one correct image
    images_per_prompt: dict[int, int]        # how many prompts have n images (GenEval: 4 each)

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(results: list[dict]) -> Summary:
    """GenEval's summary of per-image results."""
    if not results:
        raise VQBenchError("no GenEval results to summarize")
    by_task: dict[str, list[bool]] = {}
    by_prompt: dict[str, list[bool]] = {}
    for r in results:
        by_task.setdefault(r["tag"], []).append(bool(r["correct"]))
        by_prompt.setdefault(r["metadata"], []).append(bool(r["correct"]))
    unknown = set(by_task) - set(TASKS)
    if unknown:
        raise VQBenchError(f"results hold unknown GenEval tasks {sorted(unknown)}")
    accuracy = {t: sum(by_task[t]) / len(by_task[t]) for t in TASKS if t in by_task}
    per_prompt = [len(v) for v in by_prompt.values()]
    return Summary(
        task_accuracy=accuracy, task_images={t: len(by_task[t]) for t in accuracy},
        overall=math.fsum(accuracy.values()) / len(accuracy), n_images=len(results),
        n_prompts=len(by_prompt), images_correct=sum(bool(r["correct"]) for r in results) / len(results),
        prompts_correct=sum(any(v) for v in by_prompt.values()) / len(by_prompt),
        images_per_prompt={n: per_prompt.count(n) for n in sorted(set(per_prompt))})


def format_summary(s: Summary) -> str:
    lines = [f"GenEval: {s.n_images} images, {s.n_prompts} prompts "
             f"({', '.join(f'{c} with {n} images' for n, c in s.images_per_prompt.items())}; "
             f"the protocol uses {IMAGES_PER_PROMPT})"]
    for task, acc in s.task_accuracy.items():
        n = s.task_images[task]
        lines.append(f"  {task:<14} {acc:7.2%}  ({round(acc * n)} / {n})")
    lines.append(f"  correct images {s.images_correct:.2%}, prompts with a correct image {s.prompts_correct:.2%}")
    lines.append(f"overall (mean of {len(s.task_accuracy)} task accuracies): {s.overall:.5f}")
    return "\n".join(lines)
