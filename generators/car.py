"""CAR: channel-wise autoregressive generation ("next-channel prediction") over CVQ channel tokens.

Paper: "Channel-wise Vector Quantization" (Sec. 3.2, 4.2, App. E). An image
is its C channel tokens in order (nested channel dropout in the tokenizer makes the order coarse to
fine); a decoder-only transformer predicts channel c from channels < c and the condition (Eq. 6).

- Inputs are *code embeddings*: channel c's code vector (H1*W1-dim, a row of the paired CVQ
  tokenizer's codebook, passed to ``build`` as ``codebook`` and kept frozen as a buffer) through a
  2-layer MLP projector (Linear, GELU, Linear) to the backbone width. The sequence is
  ``[condition prefix, proj(e(x_0)), ..., proj(e(x_{C-2}))]``; the state at the last prefix token
  predicts x_0, the state after channel c-1 predicts x_c.
- Output: a bias-free linear head over the K codes ("the LLM head"). With a pretrained LM the
  vocabulary head is replaced by this K-way head; the paper does not say whether it extended the LM
  vocabulary instead (assumption, documented).
- Conditioning: class labels (a table with the null class for CFG) or text embeddings (N x L x D or
  N x D, projected by an MLP to a prefix; all-zero = null), with condition dropout for CFG; shared with
  the AR generator (``ar.ConditionEmbedder``).
- Backbone ``backbone=``: ``"scratch"`` (the repo's Llama blocks, ``width/depth/heads``) or
  ``"hf:<local folder>"``, a pretrained causal LM loaded with
  ``AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)`` and driven through
  ``inputs_embeds`` (its decoder stack and final norm; the vocabulary head is dropped). The paper's
  two-stage recipe (Sec. 4.2, App. E): stage I trains only the new input side (projector, and here the
  condition embedder, which is new as well) and the head with the backbone frozen; stage II trains
  everything. ``set_stage(1 | 2)`` sets ``requires_grad`` accordingly; the training loop calls it.
- Sampling: next-channel with temperature / top-k / top-p, CFG with schedules over the channels, and a
  KV cache (the repo's cache, or the HF model's ``DynamicCache``) that gives the uncached samples.

Paper presets ``car-qwen3-4b`` / ``car-qwen3-8b`` (Sec. 4.2: Qwen3-4B/8B backbones, widths 2560/4096,
256-dim channel embeddings, i.e. a 16x16 latent with 256 channel tokens, K = 16384) need the pretrained
Qwen3 weights in a local folder (``--set backbone=hf:/path/to/Qwen3-4B``). On the meta device only,
they build from the published Qwen3 architecture without weights, to count parameters. The papers'
"4B"/"8B" are the backbones' names, not counts of CAR, so no count is claimed (CAR-4B here: 4.08B,
CAR-8B: 7.67B with the vocabulary head replaced).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.core.contracts import Conditioning, Generator, SamplerConfig, TokenLayout
from harness.core.errors import MissingWeightsError, VQBenchError
from harness.core.registry import GENERATORS
from harness.models.conditioning import ConditionEmbedder
from harness.models.paper_recipes import CAR
from harness.models.sampling import decode_next_token, mask_beyond_codebook, register_invalid_codes
from harness.models.transformer import Transformer, init_weights

# Published architectures of the paper's backbones (their config.json), used only to build on the meta
# device without downloading weights.
KNOWN_LM_ARCHITECTURES = {
    "Qwen/Qwen3-4B": dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=True),
    "Qwen/Qwen3-8B": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=False),
}


# ---------------------------------------------------------------------- backbones
class ScratchBackbone(nn.Module):
    """The repo's Llama blocks (trained from scratch)."""

    def __init__(self, cfg: "CARConfig"):
        super().__init__()
        self.width = cfg.width
        self.net = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, causal=True, dropout=cfg.dropout,
                               multiple_of=cfg.multiple_of)

    def new_cache(self, rows: int, max_len: int):
        return self.net.new_cache(rows, max_len)

    def forward(self, x: torch.Tensor, cache=None, start_pos: int = 0) -> torch.Tensor:
        return self.net(x, cache=cache, start_pos=start_pos)


class HFBackbone(nn.Module):
    """The decoder stack (and final norm) of a transformers causal LM, fed with ``inputs_embeds``."""

    def __init__(self, decoder: nn.Module, width: int):
        super().__init__()
        self.decoder, self.width = decoder, width

    def new_cache(self, rows: int, max_len: int):
        from transformers import DynamicCache
        return DynamicCache()

    def forward(self, x: torch.Tensor, cache=None, start_pos: int = 0) -> torch.Tensor:
        seen = cache.get_seq_length() if cache is not None else 0
        if start_pos != seen:   # the HF model places new tokens after the cached ones
            raise ValueError(f"start_pos {start_pos} does not follow the {seen} cached positions")
        out = self.decoder(inputs_embeds=x.to(self.decoder.dtype), past_key_values=cache,
                           use_cache=cache is not None)
        return out.last_hidden_state


def _building_on_meta() -> bool:
    return torch.empty(0).device.type == "meta"


def load_hf_backbone(spec: str) -> HFBackbone:
    """``spec`` = a local folder with a transformers causal LM (config + weights)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as e:   # pragma: no cover - transformers is a dependency
        raise MissingWeightsError(f"backbone=hf:{spec} needs the transformers package ({e})") from None
    folder = Path(spec).expanduser()
    if folder.is_dir() and _building_on_meta():   # FSDP's ranks other than 0: the architecture, no weights
        # fp32 like rank 0's from_pretrained below (from_config would follow the config's dtype, often bf16)
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True),
                                              dtype=torch.float32)
    elif folder.is_dir():
        lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    elif _building_on_meta() and spec in KNOWN_LM_ARCHITECTURES:
        arch = dict(KNOWN_LM_ARCHITECTURES[spec])
        lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch),
                                              dtype=torch.float32)
    else:
        raise MissingWeightsError(f"backbone=hf:{spec}: no such local folder; download the pretrained causal LM "
                                  f"(e.g. huggingface-cli download {spec if '/' in spec else 'Qwen/Qwen3-4B'} "
                                  f"--local-dir DIR) and pass --set backbone=hf:DIR")
    return HFBackbone(lm.get_decoder(), lm.config.hidden_size)


# ---------------------------------------------------------------------- model
@dataclass(frozen=True)
class CARConfig:
    backbone: str = "scratch"       # "scratch" or "hf:<local folder of a pretrained causal LM>"
    width: int = 768                # scratch backbone only (an HF backbone brings its own)
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    multiple_of: int = 256
    dropout: float = 0.0
    projector_hidden: int = 0       # hidden width of the 2-layer MLP projector; 0: the backbone width
    class_dropout: float = 0.1      # condition dropout for CFG
    code_dim: int = 0               # H1*W1: only for meta-device builds without a codebook (paper presets)
    init_std: float = 0.02

    def build(self, layout: TokenLayout, conditioning: Conditioning,
              codebook: torch.Tensor | None = None) -> "CARGenerator":
        return CARGenerator(self, layout, conditioning, codebook)


class CARGenerator(Generator):
    family = "car"

    def __init__(self, cfg: CARConfig, layout: TokenLayout, conditioning: Conditioning,
                 codebook: torch.Tensor | None):
        super().__init__(layout)
        self.cfg, self.layout, self.conditioning = cfg, layout, conditioning
        self.vocab = layout.max_codebook_size
        self.register_buffer("codebook", self._checked_codebook(codebook))
        if cfg.backbone == "scratch":
            self.backbone = ScratchBackbone(cfg)
        elif cfg.backbone.startswith("hf:") and cfg.backbone[3:]:
            self.backbone = load_hf_backbone(cfg.backbone[3:])
        else:
            raise VQBenchError(f"car backbone={cfg.backbone!r}: expected 'scratch' or 'hf:<local folder>'")
        width = self.backbone.width
        hidden = cfg.projector_hidden or width
        self.projector = nn.Sequential(nn.Linear(self.codebook.shape[1], hidden), nn.GELU(), nn.Linear(hidden, width))
        self.cond_embed = ConditionEmbedder(conditioning, width, cfg.class_dropout)
        self.head = nn.Linear(width, self.vocab, bias=False)
        # a pretrained backbone keeps its weights: only the new modules are initialised
        for module in ((self,) if cfg.backbone == "scratch" else (self.projector, self.cond_embed, self.head)):
            init_weights(module, cfg.init_std)
        register_invalid_codes(self, layout, self.vocab)
        self.stage = 2

    def _checked_codebook(self, codebook: torch.Tensor | None) -> torch.Tensor:
        if codebook is None:
            if _building_on_meta() and self.cfg.code_dim > 0:    # shapes only: no values exist on meta
                return torch.empty(self.vocab, self.cfg.code_dim)
            raise VQBenchError("car needs the paired tokenizer's codebook (K x D code vectors): build it with "
                               "build(layout, conditioning, codebook=...) (the training pipeline passes it)")
        if codebook.dim() != 2 or codebook.shape[0] != self.vocab:
            raise VQBenchError(f"car codebook must be {self.vocab} x D (one row per code of the layout), "
                               f"got {tuple(codebook.shape)}")
        # on the device being built on (``with torch.device(...)``), like every parameter
        return codebook.detach().to(torch.empty(0).device, torch.float32).clone()

    # ------------------------------------------------------------------ two-stage recipe
    def set_stage(self, stage: int) -> None:
        """Stage 1: train projector, condition embedder and head, backbone frozen; stage 2: everything."""
        if stage not in (1, 2):
            raise VQBenchError(f"car stage must be 1 or 2, got {stage}")
        self.stage = stage
        self.backbone.requires_grad_(stage == 2)
        for module in (self.projector, self.cond_embed, self.head):
            module.requires_grad_(True)

    # ------------------------------------------------------------------ shared pieces
    def embed_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Channel tokens -> projected code embeddings (N x L x width)."""
        return self.projector(self.codebook[indices].to(self.projector[0].weight.dtype))

    # ------------------------------------------------------------------ training
    def _predict(self, indices, cond):
        n = indices.shape[0]
        prefix = self.cond_embed(cond, n)
        x = torch.cat([prefix, self.embed_codes(indices[:, :-1]).to(prefix.dtype)], dim=1)
        h = self.backbone(x)[:, prefix.shape[1] - 1:]          # the state that predicts each channel
        return mask_beyond_codebook(self.head(h.to(self.head.weight.dtype)).float(), self.invalid), indices

    # ------------------------------------------------------------------ sampling
    def _sample(self, n: int, cond, sampler: SamplerConfig, generator) -> torch.Tensor:
        guided = sampler.guided and self.conditioning.kind != "none"
        prefix = self.cond_embed.sampling_prefix(cond, n, guided, self.head.weight.device)
        return decode_next_token(self.backbone, prefix, n, self.layout,
                                 embed=lambda idx: self.embed_codes(idx).to(prefix.dtype),
                                 head=lambda h: self.head(h.to(self.head.weight.dtype)).float(),
                                 invalid=self.invalid, sampler=sampler, generator=generator)


# ---------------------------------------------------------------------- presets
@GENERATORS.register("car-tiny", family="car", scale="tiny", layouts=("channel",), kv_cache=True,
                     description="next-channel prediction, 2-layer scratch backbone, width 32 (tests)")
def car_tiny() -> CARConfig:
    return CARConfig(width=32, depth=2, heads=4, multiple_of=16)


@GENERATORS.register("car-fmnist", family="car", scale="small", layouts=("channel",), kv_cache=True,
                     description="next-channel prediction on 49 CVQ channel tokens (7x7 codes), 4-layer "
                                 "scratch backbone, width 128 (default suite)")
def car_fmnist() -> CARConfig:
    # the width/depth of ar-fmnist, so CAR vs AR on the same data compares input embeddings and order
    return CARConfig(width=128, depth=4, heads=4, multiple_of=64)


def _paper_layout() -> TokenLayout:
    # CVQ at 256x256, f16: 256 channel tokens of 16x16 = 256 dims, K = 16384 (Sec. 4.1)
    return TokenLayout.constant(256, 16384, position_kind="channel")


# text prompts embedded by the packaged sentence encoder (all-MiniLM-L6-v2, 384-dim); the paper
# feeds the prompt through the LM's own token embeddings, which this harness does not model
PAPER_CONDITIONING = Conditioning(kind="text", text_dim=384)

for _size, _width in (("4b", 2560), ("8b", 4096)):
    GENERATORS.add(f"car-qwen3-{_size}", lambda s=_size: CARConfig(backbone=f"hf:Qwen/Qwen3-{s.upper()}", code_dim=256),
                   family="car", scale="paper", layouts=("channel",), kv_cache=True,
                   paper_layout=_paper_layout(), paper_conditioning=PAPER_CONDITIONING, recipe=CAR,
                   description=f"CAR ({_size.upper()}, Sec. 4.2): pretrained Qwen3-{_size.upper()} backbone "
                               f"(width {_width}), 2-layer projector from 256-dim channel embeddings, two-stage "
                               f"recipe; needs --set backbone=hf:/path/to/Qwen3-{_size.upper()}")
