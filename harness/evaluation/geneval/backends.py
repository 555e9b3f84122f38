"""GenEval's two judges, behind small protocols: an object detector and a colour classifier.

Real backends load weights you provide (none can be downloaded on an offline machine):
- ``maskrcnn:<file>`` / ``maskrcnn_v2:<file>``: torchvision's COCO Mask R-CNN (``maskrcnn_resnet50_fpn``
  / ``_v2``) from its state dict. GenEval itself uses mmdetection's Mask2Former (Swin-S); scores
  from another detector are GenEval's protocol with a different judge and are labelled with it
  (an mmdet backend is future work).
- ``<open_clip arch>:<file>``: an open_clip model for zero-shot colours (GenEval: ViT-L-14 with
  OpenAI's weights - for a file of OpenAI's weights name the arch ``ViT-L-14-quickgelu``, the
  activation they were trained with: open_clip cannot tell it from a bare weights file).
Specs come from ``--detector`` / ``--clip`` or ``$VQBENCH_GENEVAL_DETECTOR`` / ``$VQBENCH_GENEVAL_CLIP``.

Test doubles, for synthetic scenes only (``scenes.py``): ``GroundTruthSceneBackend`` reads a
scene's objects from its JSON sidecar instead of detecting them; ``PaletteColorDouble`` names the
palette colour covering most of a crop, exact for the flat colours those scenes are drawn with.
For any image, ``NothingDetectedDouble`` detects nothing (every prompt fails): it tests the chain from
a generator's samples to scores (`vqbench geneval generate` -> `vqbench eval geneval`), never quality.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from harness.core.errors import MissingWeightsError, VQBenchError
from harness.evaluation.geneval.prompts import COCO_CLASSES, COCO_NAME_TO_GENEVAL, COLORS

DETECTOR_ENV, CLIP_ENV = "VQBENCH_GENEVAL_DETECTOR", "VQBENCH_GENEVAL_CLIP"
DETECTOR_USAGE = ("--detector maskrcnn:<torchvision maskrcnn_resnet50_fpn COCO state dict .pth> "
                  f"(or maskrcnn_v2:<file>, or ${DETECTOR_ENV})")
CLIP_USAGE = (f"--clip <open_clip arch>:<weights file> such as ViT-L-14-quickgelu:/models/openai_vit_l14.bin "
              f"(or ${CLIP_ENV})")
# GenEval's zero-shot colour prompts ({c}: colour, {o}: the object's class)
COLOR_TEMPLATES = ("a photo of a {c} {o}", "a photo of a {c}-colored {o}", "a photo of a {c} object")


@dataclass(frozen=True)
class Detection:
    """One detected instance: a GenEval class name, confidence, box (x1, y1, x2, y2 in pixels) and
    an optional boolean instance mask (H x W)."""
    label: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None


class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image, path: Path) -> list[Detection]:
        """All instances in ``image`` (read from ``path``), any order, any confidence."""


class ColorClassifier(Protocol):
    name: str

    def classify(self, crops: list[Image.Image], classname: str) -> list[str]:
        """One of ``COLORS`` per object crop (background already masked out)."""


# ---------------------------------------------------------------- real backends
def _require_weights(path: str, what: str, usage: str) -> Path:
    if not path:
        raise MissingWeightsError(f"GenEval needs {what} you provide: {usage}; it cannot be downloaded here")
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"GenEval {what}: {p} not found; provide {usage}")
    return p


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from harness.core.distributed import check_device
    check_device(device)
    return torch.device(device)


class TorchvisionMaskRCNN:
    """torchvision's COCO Mask R-CNN from a state dict file; COCO labels mapped to GenEval's names.

    torchvision already applies per-class NMS (IoU 0.5) and keeps boxes above 0.05 confidence;
    GenEval's own thresholds (0.3 / 0.9) are applied afterwards by the scorer.
    """

    ARCHS = {"maskrcnn": ("maskrcnn_resnet50_fpn", "MaskRCNN_ResNet50_FPN_Weights"),
             "maskrcnn_v2": ("maskrcnn_resnet50_fpn_v2", "MaskRCNN_ResNet50_FPN_V2_Weights")}

    def __init__(self, arch: str, path: str, device: str = "auto"):
        builder, weights_enum = self.ARCHS[arch]
        file = _require_weights(path, "object-detector weights", DETECTOR_USAGE)
        from torchvision.models import detection
        self.name = builder
        self.device = _device(device)
        with torch.device("meta"):          # no random init of 44M weights that are replaced anyway
            model = getattr(detection, builder)(weights=None, weights_backbone=None, num_classes=91)
        state = _load_state_dict(file)
        try:
            model.load_state_dict(state, assign=True)
        except RuntimeError as e:
            raise VQBenchError(f"{file} is not a {builder} COCO state dict ({str(e).splitlines()[0]})") from None
        self.model = model.eval().to(self.device)
        # the enum's metadata (no download): 91 COCO category slots, "N/A" for the unused ids
        categories = getattr(detection, weights_enum).COCO_V1.meta["categories"]
        self.labels = {i: COCO_NAME_TO_GENEVAL.get(c, c) for i, c in enumerate(categories)
                       if c not in ("__background__", "N/A")}
        assert sorted(self.labels.values()) == sorted(COCO_CLASSES), "torchvision's COCO names changed"

    @torch.no_grad()
    def detect(self, image: Image.Image, path: Path) -> list[Detection]:
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        out = self.model([x.to(self.device)])[0]
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy()        # torchvision's mask probability cut
        return [Detection(self.labels[int(label)], float(score), tuple(float(v) for v in box), mask)
                for label, score, box, mask in zip(out["labels"].tolist(), out["scores"].cpu(),
                                                   out["boxes"].cpu(), masks)
                if int(label) in self.labels]


def _load_state_dict(file: Path) -> dict:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:                     # pickle / zip errors: not a torch state dict file
        raise VQBenchError(f"{file} could not be read as a torch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]                 # training checkpoints wrap the weights
    if not isinstance(state, dict):
        raise VQBenchError(f"{file} does not hold a state dict")
    return state


class OpenCLIPColorClassifier:
    """CLIP zero-shot colour classification as GenEval does it: per object class, each colour's text
    embedding is the normalized mean of the normalized embeddings of ``COLOR_TEMPLATES``; a crop
    takes the colour of highest cosine similarity."""

    def __init__(self, arch: str, path: str, device: str = "auto"):
        file = _require_weights(path, "CLIP weights", CLIP_USAGE)
        try:
            import open_clip
        except ImportError:
            raise MissingWeightsError("GenEval colours need the PyPI package 'open_clip_torch' "
                                      "(pip install open_clip_torch)") from None
        self.name = f"open_clip:{arch}"
        self.device = _device(device)
        try:
            model, _, self.preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(file))
        except RuntimeError as e:
            raise VQBenchError(f"{file} does not fit open_clip {arch!r} ({str(e).splitlines()[0]})") from None
        self.model = model.eval().to(self.device)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def color_embeddings(self, classname: str) -> torch.Tensor:
        """len(COLORS) x D unit vectors for objects of ``classname`` (cached per class)."""
        if classname not in self._text:
            rows = []
            for color in COLORS:
                tokens = self.tokenizer([t.format(c=color, o=classname) for t in COLOR_TEMPLATES])
                e = self.model.encode_text(tokens.to(self.device)).float()
                e = e / e.norm(dim=-1, keepdim=True)
                mean = e.mean(0)
                rows.append(mean / mean.norm())
            self._text[classname] = torch.stack(rows)
        return self._text[classname]

    @torch.no_grad()
    def classify(self, crops: list[Image.Image], classname: str) -> list[str]:
        if not crops:
            return []
        x = torch.stack([self.preprocess(c) for c in crops]).to(self.device)
        f = self.model.encode_image(x).float()
        f = f / f.norm(dim=-1, keepdim=True)
        return [COLORS[i] for i in (f @ self.color_embeddings(classname).T).argmax(1).tolist()]


# ---------------------------------------------------------------- test doubles (synthetic scenes)
class GroundTruthSceneBackend:
    """TEST DOUBLE detector: returns the objects recorded in a synthetic scene's sidecar
    (``samples/0000.json`` next to ``0000.png``, written by ``scenes.write_scene``), with the
    confidence stored there and the mask of the drawn shape. It detects nothing."""

    name = "ground-truth-double"

    def detect(self, image: Image.Image, path: Path) -> list[Detection]:
        from harness.evaluation.geneval.scenes import read_sidecar, shape_mask
        sidecar = Path(path).with_suffix(".json")
        if not sidecar.is_file():
            raise VQBenchError(f"{sidecar} not found: the ground-truth test double only reads synthetic "
                               "scenes (harness.evaluation.geneval.scenes); use a real --detector for generated images")
        return [Detection(o.label, o.score, o.box, shape_mask(o, image.size)) for o in read_sidecar(sidecar)]


class NothingDetectedDouble:
    """TEST DOUBLE detector: finds no object in any image, so every GenEval prompt fails and every task
    accuracy is 0. For testing the plumbing on generated images; it measures nothing."""

    name = "nothing-detected-double"

    def detect(self, image: Image.Image, path: Path) -> list[Detection]:
        return []


class PaletteColorDouble:
    """TEST DOUBLE colour classifier: the palette colour (``scenes.PALETTE``) covering the most pixels
    of a crop, ignoring anything else (such as the grey masked background). Exact on the flat
    colours synthetic scenes are drawn with; meaningless on real images."""

    name = "palette-double"

    def classify(self, crops: list[Image.Image], classname: str) -> list[str]:
        from harness.evaluation.geneval.scenes import PALETTE
        palette = np.array([PALETTE[c] for c in COLORS])                     # C x 3
        out = []
        for crop in crops:
            px = np.asarray(crop.convert("RGB")).reshape(-1, 1, 3).astype(int)
            hits = (px == palette[None]).all(-1).sum(0)                      # exact matches per colour
            out.append(COLORS[int(hits.argmax())])
        return out


# ---------------------------------------------------------------- specs
def build_detector(spec: str | None, device: str = "auto") -> Detector:
    spec = spec or os.environ.get(DETECTOR_ENV, "")
    if spec == GroundTruthSceneBackend.name:
        return GroundTruthSceneBackend()
    if spec == NothingDetectedDouble.name:
        return NothingDetectedDouble()
    kind, _, path = spec.partition(":")
    if not spec:
        raise MissingWeightsError(f"GenEval needs an object detector you provide: {DETECTOR_USAGE}")
    if kind not in TorchvisionMaskRCNN.ARCHS:
        raise VQBenchError(f"unknown GenEval detector {kind!r}: use {DETECTOR_USAGE}")
    return TorchvisionMaskRCNN(kind, path, device)


def build_color_classifier(spec: str | None, device: str = "auto") -> ColorClassifier:
    spec = spec or os.environ.get(CLIP_ENV, "")
    if spec == PaletteColorDouble.name:
        return PaletteColorDouble()
    arch, _, path = spec.partition(":")
    if not spec:
        raise MissingWeightsError(f"GenEval colours need CLIP weights you provide: {CLIP_USAGE}")
    return OpenCLIPColorClassifier(arch, path, device)


def check_specs(detector: str | None, clip: str | None) -> None:
    """Fail before any work, in one line naming every judge whose weights are missing."""
    detector = detector or os.environ.get(DETECTOR_ENV, "")
    clip = clip or os.environ.get(CLIP_ENV, "")
    missing = []
    if detector not in (GroundTruthSceneBackend.name, NothingDetectedDouble.name):
        kind, _, path = detector.partition(":")
        if detector and kind not in TorchvisionMaskRCNN.ARCHS:
            raise VQBenchError(f"unknown GenEval detector {kind!r}: use {DETECTOR_USAGE}")
        if not path or not Path(path).expanduser().is_file():
            missing.append(f"object detector: {path + ' not found, ' if path else ''}give {DETECTOR_USAGE}")
    if clip != PaletteColorDouble.name:
        _, _, path = clip.partition(":")
        if not path or not Path(path).expanduser().is_file():
            missing.append(f"CLIP: {path + ' not found, ' if path else ''}give {CLIP_USAGE}")
    if missing:
        raise MissingWeightsError("GenEval needs weights you provide (none can be downloaded here): "
                                  + "; ".join(missing))


def describe(detector: Detector, colors: ColorClassifier) -> str:
    return f"{detector.name}+{colors.name}"
