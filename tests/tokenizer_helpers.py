"""Test doubles around real tokenizers."""
import torch

from harness.models.catalog import tokenizer_config


def poison_forward_after(monkeypatch, preset: str, calls: int) -> None:
    """Make ``preset``'s tokenizer return a NaN reconstruction from forward call number ``calls`` on."""
    cls = type(tokenizer_config(preset).build())
    original, count = cls.forward, {"n": 0}

    def forward(self, x):
        out = original(self, x)
        count["n"] += 1
        if count["n"] > calls:
            out.reconstruction = out.reconstruction * torch.tensor(float("nan"))
        return out
    monkeypatch.setattr(cls, "forward", forward)


# a vq-tiny run in seconds: no LPIPS, a one-layer discriminator from step 1, two steps
TINY_VQ_SETTINGS = ("perceptual_weight=0", "batch_size=8", "disc_layers=1", "disc_channels=8", "steps=2",
                    "ckpt_every=2", "disc_start=1")


def train_tiny_vq(run_dir, n_train: int | None = None):
    """A two-step vq-tiny run on the procedural set; returns its final checkpoint."""
    from harness.training.train_tokenizer import train_tokenizer
    return train_tokenizer("vq-tiny", run_dir, overrides=list(TINY_VQ_SETTINGS), dataset="procedural",
                           n_train=n_train, progress=False)
