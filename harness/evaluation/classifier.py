"""The prompt classifier: a small CNN trained on a labelled dataset's training split, the judge of
``prompt_accuracy`` (does a text-conditioned generator's sample show the class its prompt names?).

Recipe (fixed, part of the cache key): two 3x3 conv layers (32 and 64 channels, ReLU, 2x2 max-pool),
a linear layer; AdamW (lr 2e-3, weight decay 1e-4), batch 128, ``EPOCHS`` epochs over the first
``N_TRAIN`` training images (the dataset's seeded subset), torch seed 0, inputs at the generator's
resolution and channels. Its accuracy on the test split is measured once and travels with it: a
prompt accuracy is only as good as its judge, and the rows record both (an image folder without a test
folder serves its one folder as every split, so there that accuracy is on training images). The trained weights are cached
under ``$VQBENCH_CACHE/classifiers/`` by (dataset, resolution, channels, recipe), so every evaluation
of a suite shares one classifier.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from harness.core.errors import VQBenchError
from harness.core.io import write_atomic
from harness.core.weights import cache_dir
from harness.data.datasets import open_dataset

RECIPE = {"arch": "conv32-conv64-linear", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 128, "seed": 0}
EPOCHS = 2
N_TRAIN = 20000
N_TEST = 10000


class SmallCNN(nn.Module):
    def __init__(self, channels: int, resolution: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(64 * (resolution // 4) ** 2, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


@dataclass
class PromptClassifier:
    """A trained ``SmallCNN`` with what it was trained on and how well it classifies the test split."""
    model: SmallCNN
    dataset: str
    resolution: int
    channels: int
    test_accuracy: float

    @property
    def name(self) -> str:
        """The judge, as result rows name it (``feature_extractor``)."""
        return (f"small-cnn[{self.dataset} {self.resolution}px, {N_TRAIN} train images x {EPOCHS} epochs, "
                f"test accuracy {self.test_accuracy:.3f}]")

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class of each image (N x C x H x W in [-1, 1] at this classifier's resolution and channels)."""
        if images.shape[1:] != (self.channels, self.resolution, self.resolution):
            raise VQBenchError(f"the prompt classifier takes {self.channels} x {self.resolution} x {self.resolution} "
                               f"images, got {tuple(images.shape[1:])}")
        device = next(self.model.parameters()).device
        return self.model(images.float().to(device)).argmax(-1).cpu()


def _key(dataset: str, resolution: int, channels: int, n_train: int, epochs: int) -> str:
    spec = json.dumps([dataset, resolution, channels, n_train, epochs, RECIPE])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def prompt_classifier(dataset: str, resolution: int, channels: int, *, n_train: int = N_TRAIN,
                      epochs: int = EPOCHS, n_test: int = N_TEST, device: str | torch.device = "cpu",
                      cache: bool = True) -> PromptClassifier:
    """The trained classifier of ``dataset`` at this resolution (read from the cache, or trained and cached)."""
    train = open_dataset(dataset, "train", resolution=resolution, channels=channels, n=n_train)
    if not train.num_classes:
        raise VQBenchError(f"prompt accuracy needs a labelled dataset; {dataset!r} declares no classes")
    path = cache_dir() / "classifiers" / f"{_key(dataset, resolution, channels, n_train, epochs)}.safetensors"
    with torch.random.fork_rng(devices=[]):      # a seeded init that leaves the caller's RNG untouched
        torch.manual_seed(RECIPE["seed"])
        model = SmallCNN(channels, resolution, train.num_classes)
    if cache and path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                accuracy = float(f.metadata()["test_accuracy"])
                model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
            return PromptClassifier(model.to(device).eval(), dataset, resolution, channels, accuracy)
        except (OSError, RuntimeError, ValueError, KeyError, SafetensorError):
            pass                          # unreadable: trained again and rewritten
    _fit(model, train, epochs, device)
    test = open_dataset(dataset, "test", resolution=resolution, channels=channels, n=n_test)
    accuracy = _accuracy(model, test, device)
    if cache:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        write_atomic(path, lambda p: save_file(tensors, str(p), metadata={"test_accuracy": repr(accuracy)}))
    return PromptClassifier(model.eval(), dataset, resolution, channels, accuracy)


def _fit(model: SmallCNN, train, epochs: int, device) -> None:
    g = torch.Generator().manual_seed(RECIPE["seed"])
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=g)
        for s in range(0, len(train), RECIPE["batch_size"]):
            x, y = train.batch(order[s:s + RECIPE["batch_size"]])
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def _accuracy(model: SmallCNN, test, device) -> float:
    correct = 0
    for s in range(0, len(test), 500):
        x, y = test.batch(torch.arange(s, min(s + 500, len(test))))
        correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
    return correct / len(test)
