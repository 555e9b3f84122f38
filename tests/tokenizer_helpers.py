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
