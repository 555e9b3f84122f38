"""DINOv2 ViT-L/14 features for FD_DINOv2 (Stein et al. 2023, "Exposing flaws of generative model
evaluation metrics and their unfair treatment of diffusion models"), through torch-fidelity's extractor.

torch-fidelity (0.4) builds ``dinov2-vit-l-14`` with ``torch.hub.load("facebookresearch/dinov2",
"dinov2_vitl14")``: the repository's code and its weights (``dinov2_vitl14_pretrain.pth``) come from
torch.hub's cache (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``), so evaluation runs offline once the
cache holds both. torch-fidelity's input: uint8 images, TF1-bilinear resize to 224 x 224, ImageNet mean
and std; the feature is the normalized CLS embedding (1024-d). vqbench feeds it the same uint8 images as
every protocol (rounded from [-1, 1], grey repeated to RGB; harness.evaluation.features) and uses the
embedding where the Inception protocols use pool3.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from harness.core.errors import MissingWeightsError

DINOV2_NAME = "dinov2-vit-l-14"      # torch-fidelity's name of DINOv2 ViT-L/14
HUB_REPO, HUB_ENTRY = "facebookresearch/dinov2", "dinov2_vitl14"
HUB_CHECKPOINT = "dinov2_vitl14_pretrain.pth"
DINOV2_DIM = 1024


def hub_repo_dir() -> Path | None:
    """torch.hub's cached copy of the DINOv2 repository (its default branch), or None."""
    hub = Path(torch.hub.get_dir())
    owner, name = HUB_REPO.split("/")
    return next((d for d in (hub / f"{owner}_{name}_{ref}" for ref in ("main", "master")) if d.is_dir()), None)


def dinov2_unavailable_reason() -> str | None:
    """Why torch-fidelity's DINOv2 extractor cannot be built offline here, or None when it can."""
    try:
        import torch_fidelity.feature_extractor_dinov2  # noqa: F401
    except ImportError:
        return "FD_DINOv2 runs through torch-fidelity's DINOv2 extractor: pip install 'torch-fidelity>=0.4'"
    hub = Path(torch.hub.get_dir())
    missing = [what for what, there in (("the repository facebookresearch_dinov2_main", hub_repo_dir() is not None),
                                        (f"the weights checkpoints/{HUB_CHECKPOINT}",
                                         (hub / "checkpoints" / HUB_CHECKPOINT).is_file())) if not there]
    if not missing:
        return None
    return (f"DINOv2 ViT-L/14 is not in torch.hub's cache {hub} ({' and '.join(missing)} missing); on a machine "
            f"with internet run python -c \"import torch; torch.hub.load('{HUB_REPO}', '{HUB_ENTRY}')\" once and copy "
            "its hub folder here, or set TORCH_HOME to a folder holding hub/ with both")


def weights_tag() -> str:
    """Names the cached DINOv2 weights in feature-cache keys: the checkpoint's size in bytes (cheap to read;
    a 1.2 GB file is not hashed on every lookup)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / HUB_CHECKPOINT
    return f"{path.stat().st_size}b" if path.is_file() else "absent"


class DINOv2Network(nn.Module):
    """torch-fidelity's ``dinov2-vit-l-14`` extractor: ``embed(uint8 N x 3 x H x W) -> N x 1024`` (the
    feature pass, harness.evaluation.features, quantizes the images and wraps the embedding)."""

    dim = DINOV2_DIM

    def __init__(self):
        super().__init__()
        reason = dinov2_unavailable_reason()
        if reason:
            raise MissingWeightsError(reason)
        from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
        self.net = FeatureExtractorDinoV2(DINOV2_NAME, ["dinov2"])
        self.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def embed(self, u8: torch.Tensor) -> torch.Tensor:
        parts = [self.net(chunk.to(self.device))[0].float().cpu() for chunk in u8.split(32)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)


@functools.lru_cache(maxsize=None)
def shared_dinov2(device: str = "cpu") -> DINOv2Network:
    """One frozen instance per device and process."""
    return DINOv2Network().to(device)
