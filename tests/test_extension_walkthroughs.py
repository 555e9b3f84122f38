"""The README's four "extending vqbench" walkthroughs, each done as a newcomer does it.

Each test writes ONE new file into a throw-away plugin folder, points ``$VQBENCH_PLUGIN_PATH`` at it
and drives the command line in-process: the new thing must be listed by ``vqbench list``, train
(where it applies), evaluate into a results store and appear in the table ``vqbench report``
renders. The plugin sources below are the README's skeletons.
"""
from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.core import discovery
from harness.core.registry import ALL

# the tiny suite's training settings (harness.suites.TINY_TOKENIZER) with fewer steps
TINY_TRAINING = ("steps=3", "batch_size=8", "perceptual_weight=0", "disc_start=3", "disc_layers=1",
                 "disc_channels=8", "ckpt_every=3")


# ------------------------------------------------------------------ the four new files
QUANTIZER_FILE = '''
"""Sign-quantization tokenizer: every code dimension is replaced by its sign, so D dimensions give 2^D
implicit codes (the binary lookup-free quantizer of MAGVIT-v2, Yu et al., ICLR 2024, Sec. 3.1, without
its entropy loss), with VQ-VAE's commitment loss (van den Oord et al., NeurIPS 2017, Eq. 3)."""
from dataclasses import dataclass

import torch

from harness.core.registry import TOKENIZERS
from harness.models.conv_tokenizer import TINY_BACKBONE, ConvBackbone, ConvTokenizer
from harness.models.quantizers.base import Quantizer, QuantizerOutput


class SignQuantizer(Quantizer):
    def __init__(self, dim: int, beta: float):
        super().__init__()
        self.codebook_size, self.code_dim, self.beta = 2 ** dim, dim, beta
        self.register_buffer("bit_values", 2 ** torch.arange(dim), persistent=False)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        indices = ((z > 0).long() * self.bit_values).sum(-1)
        q = self.lookup(indices).to(z.dtype)        # exactly what decoding the indices will see
        losses = {"commitment": self.beta * (z - q).pow(2).mean()}
        quantized = z + (q - z).detach() if z.requires_grad else q      # straight-through estimator
        return QuantizerOutput(quantized, indices, losses)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        bits = (indices.unsqueeze(-1) & self.bit_values) > 0
        return bits.float() * 2 - 1


@dataclass(frozen=True)
class SignConfig(ConvBackbone):
    beta: float = 0.25

    def build(self) -> "SignTokenizer":
        return SignTokenizer(self)


class SignTokenizer(ConvTokenizer):
    family = "signvq"

    def make_quantizer(self, cfg: SignConfig) -> SignQuantizer:
        return SignQuantizer(cfg.codebook_dim, cfg.beta)


@TOKENIZERS.register("mine-tiny", family="signvq", scale="tiny",
                     description="sign quantizer, 6 bits per token, 8x8 tokens on 16x16 gray")
def mine_tiny() -> SignConfig:
    return SignConfig(**TINY_BACKBONE, codebook_dim=6)
'''

METRIC_FILE = '''
"""Mean absolute error: per image, the mean |real - reconstruction| of pixels in [0, 1] (the L1
reconstruction error); the value is the mean over images."""
import torch

from harness.core.contracts import EvalBatch, Metric
from harness.core.registry import METRICS


@METRICS.register("mine_mae", description="mean absolute pixel error in [0, 1], mean over images")
class MeanAbsoluteError(Metric):
    name = "mine_mae"
    requires = frozenset({"real", "reconstruction"})
    higher_is_better = {"mine_mae": False}

    def __init__(self):
        super().__init__()
        # float64/int64 sums: `compute` adds them over DDP ranks first
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def update(self, batch: EvalBatch) -> None:
        error = (batch.real.double() - batch.reconstruction.double()).abs() / 2     # [-1, 1] -> [0, 1] units
        self.total = self.total + error.flatten(1).mean(1).sum().cpu()
        self.count = self.count + error.shape[0]

    def compute(self) -> dict[str, float]:
        return {"mine_mae": float(self.total / self.count)}
'''

GENERATOR_FILE = '''
"""Class-conditional bigram generator: code t is drawn from softmax(W (e[x_{t-1}] + p_t + c)), a
first-order Markov chain over the token sequence (the digram approximation of Shannon, "A Mathematical
Theory of Communication", 1948, Sec. 3), with classifier-free guidance (Ho & Salimans, 2022) when sampling."""
from dataclasses import dataclass

import torch
from torch import nn

from harness.core.contracts import Conditioning, Generator, SamplerConfig, TokenLayout
from harness.core.registry import GENERATORS
from harness.models.conditioning import ONE_FACTOR_LAYOUTS, ConditionEmbedder
from harness.models.sampling import (cfg_mix, guidance_scales, mask_beyond_codebook, register_invalid_codes,
                                     sample_with)


@dataclass(frozen=True)
class BigramConfig:
    width: int = 32
    class_dropout: float = 0.1       # condition dropout, what classifier-free guidance needs

    def build(self, layout: TokenLayout, conditioning: Conditioning,
              codebook: torch.Tensor | None = None) -> "BigramGenerator":
        return BigramGenerator(self, layout, conditioning)


class BigramGenerator(Generator):
    family = "bigram"

    def __init__(self, cfg: BigramConfig, layout: TokenLayout, conditioning: Conditioning):
        super().__init__(layout)
        self.cfg, self.layout, self.conditioning = cfg, layout, conditioning
        self.vocab = layout.max_codebook_size
        self.cond_embed = ConditionEmbedder(conditioning, cfg.width, cfg.class_dropout)
        self.prev_embed = nn.Embedding(self.vocab + 1, cfg.width)          # row `vocab`: the start token
        self.pos_embed = nn.Parameter(torch.zeros(layout.num_positions, cfg.width))
        self.head = nn.Linear(cfg.width, self.vocab)
        register_invalid_codes(self, layout, self.vocab)                 # codes >= K_t never drawn

    def _logits(self, prev: torch.Tensor, cond_vec: torch.Tensor, positions: slice) -> torch.Tensor:
        """Logits N x L x V of the codes at ``positions`` after the codes ``prev`` (N x L), not yet masked."""
        return self.head(self.prev_embed(prev) + self.pos_embed[positions] + cond_vec).float()

    def _predict(self, indices, cond):
        n = indices.shape[0]
        start = torch.full((n, 1), self.vocab, dtype=torch.long, device=indices.device)
        prev = torch.cat([start, indices[:, :-1]], dim=1)
        logits = self._logits(prev, self.cond_embed(cond, n), slice(None))
        return mask_beyond_codebook(logits, self.invalid), indices

    def _sample(self, n, cond, sampler: SamplerConfig, generator):
        guided = sampler.guided and self.conditioning.kind != "none"
        cond_vec = self.cond_embed.sampling_prefix(cond, n, guided, self.head.weight.device)  # (2)n x 1 x W
        scales = guidance_scales(sampler, self.layout.num_positions, self.layout.codebook_sizes)
        prev = torch.full((cond_vec.shape[0], 1), self.vocab, dtype=torch.long, device=cond_vec.device)
        codes = []
        for t in range(self.layout.num_positions):
            logits = self._logits(prev, cond_vec, slice(t, t + 1))[:, 0]
            if guided:
                logits = cfg_mix(logits[:n], logits[n:], float(scales[t]))
            code = sample_with(mask_beyond_codebook(logits, self.invalid, t), sampler, generator)  # after mixing
            codes.append(code)
            prev = code.repeat(2 if guided else 1)[:, None]    # both halves continue from the drawn code
        return torch.stack(codes, dim=1)


@GENERATORS.register("mine-gen-tiny", family="bigram", scale="tiny", layouts=ONE_FACTOR_LAYOUTS,
                     description="class-conditional bigram over the token sequence, width 32")
def mine_gen_tiny() -> BigramConfig:
    return BigramConfig(width=32)
'''

DATASET_FILE = '''
"""Solid squares: one gray square on a gray background per 16x16 image, 2 classes (square lighter or
darker than the background), 256 train / 64 test images drawn from a fixed seed per split."""
import numpy as np
import torch

from harness.core.errors import VQBenchError
from harness.core.registry import DATASETS
from harness.data.datasets import TensorImageDataset

SIZES = {"train": 256, "test": 64}


@DATASETS.register("mine-squares", description="solid gray squares on gray, 2 classes, 16x16 gray, "
                                               "256 train / 64 test")
def mine_squares(split: str, resolution: int | None = None, channels: int | None = None,
                 n: int | None = None, root: str | None = None) -> TensorImageDataset:
    if split not in SIZES:
        raise VQBenchError(f"mine-squares has splits {', '.join(SIZES)}, not {split!r}")
    count = SIZES[split]
    rng = np.random.default_rng(list(SIZES).index(split))         # the same images on every call
    labels = np.arange(count) % 2                                  # 1: the square is lighter
    background = rng.integers(0, 128, count) + 128 * (1 - labels)
    square = rng.integers(0, 128, count) + 128 * labels
    corners, sides = rng.integers(0, 8, (count, 2)), rng.integers(4, 9, count)
    images = np.repeat(background, 16 * 16).reshape(count, 16, 16)
    for image, value, (y, x), side in zip(images, square, corners, sides):
        image[y:y + side, x:x + side] = value
    return TensorImageDataset("mine-squares", split, torch.from_numpy(images.astype(np.uint8)).unsqueeze(1),
                              torch.from_numpy(labels), 2, n=n, resolution=resolution, channels=channels)
'''


# ------------------------------------------------------------------ helpers
@pytest.fixture
def add_plugin(tmp_path, monkeypatch):
    """``add_plugin(filename, source)`` writes one file into a fresh folder on ``$VQBENCH_PLUGIN_PATH``;
    the next registry lookup loads it, as a new ``vqbench`` process would.

    Afterwards the registries and ``sys.modules`` are as before: other tests never see the throw-away
    entries, and a walkthrough run again in the same process imports its file again.
    """
    for registry in ALL.values():
        registry.entries()                      # the built-in entries, loaded before the snapshot
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    monkeypatch.setenv("VQBENCH_PLUGIN_PATH", str(folder))

    def add(filename: str, source: str) -> None:
        (folder / filename).write_text(textwrap.dedent(source).lstrip())
        monkeypatch.setattr(discovery, "_loaded", False)    # plugin folders are read once per process

    yield add
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").parent == folder:
            del sys.modules[name]


def vqbench(capsys, *argv) -> str:
    """Run ``vqbench ARGV`` in this process; its standard output (fails on a non-zero exit)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"vqbench {' '.join(map(str, argv))} exited {code}: {err[-2000:]}"
    return out


def listed(capsys, kind: str) -> list[str]:
    """The names ``vqbench list KIND`` prints (first word of each indented line)."""
    return [line.split()[0] for line in vqbench(capsys, "list", kind).splitlines() if line.startswith("  ")]


def settings(*pairs: str) -> list[str]:
    """``--set`` arguments for ``key=value`` pairs."""
    return [a for s in pairs for a in ("--set", s)]


def train(capsys, preset: str, run_dir: Path, *args) -> Path:
    """``vqbench train PRESET --run-dir RUN_DIR ARGS``; its final checkpoint, checked to be finished."""
    out = vqbench(capsys, "train", preset, "--run-dir", run_dir, *args, "--device", "cpu", "--quiet")
    final = Path(out.strip().splitlines()[-1].removeprefix("final checkpoint: "))
    state = json.loads((final / "state.json").read_text())
    assert final.parent == run_dir / "checkpoints" and (final / "weights.safetensors").is_file()
    assert state["preset"] == preset and state["done"] is True and state["step"] == 3
    return final


def rows_of(results: Path, **where) -> list[dict]:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def assert_finite(rows: list[dict], *metrics: str) -> None:
    values = {r["metric"]: r["value"] for r in rows}
    for metric in metrics:
        assert metric in values and values[metric] is not None and math.isfinite(values[metric]), (metric, values)


def reported(capsys, results: Path, out: Path) -> str:
    """``vqbench report RESULTS --out OUT``; the rendered Markdown table."""
    vqbench(capsys, "report", results, "--out", out)
    return (out / "results.md").read_text()


@pytest.fixture(scope="module")
def vq_tiny_run(tmp_path_factory) -> Path:
    """A vq-tiny tokenizer trained 3 steps on the procedural set (what walkthroughs 2 and 3 build on)."""
    run_dir = tmp_path_factory.mktemp("vq-tiny")
    assert main(["train", "vq-tiny", "--run-dir", str(run_dir), "--dataset", "procedural", "--device", "cpu",
                 "--quiet", *settings(*TINY_TRAINING)]) == 0
    return run_dir


# ------------------------------------------------------------------ the walkthroughs
def test_walkthrough_a_new_quantizer(add_plugin, tmp_path, capsys):
    add_plugin("mine_signvq.py", QUANTIZER_FILE)
    assert "mine-tiny" in listed(capsys, "tokenizers")

    run = tmp_path / "mine-tiny"
    train(capsys, "mine-tiny", run, "--dataset", "procedural", *settings(*TINY_TRAINING))

    results = tmp_path / "results.jsonl"
    vqbench(capsys, "eval", run, "--results", results, "--metrics", "psnr,codebook_usage", "--n-eval", 16,
            "--device", "cpu", "--quiet")
    rows = rows_of(results, preset="mine-tiny")
    assert_finite(rows, "psnr", "codebook_usage")
    assert {r["model"] for r in rows} == {"signvq"} and {r["n_images"] for r in rows} == {16}

    table = reported(capsys, results, tmp_path / "report")
    assert "mine-tiny" in table and "psnr ↑" in table and "codebook_usage ↑" in table


def test_walkthrough_a_new_metric(add_plugin, vq_tiny_run, tmp_path, capsys):
    add_plugin("mine_mae.py", METRIC_FILE)
    assert "mine_mae" in listed(capsys, "metrics")

    results = tmp_path / "results.jsonl"
    vqbench(capsys, "eval", vq_tiny_run, "--results", results, "--metrics", "mine_mae", "--n-eval", 16,
            "--device", "cpu", "--quiet")
    rows = rows_of(results, metric="mine_mae")
    assert_finite(rows, "mine_mae")
    assert rows[0]["preset"] == "vq-tiny" and rows[0]["higher_is_better"] is False
    assert 0 < rows[0]["value"] < 1           # an error in [0, 1] units; an untrained model is not exact

    table = reported(capsys, results, tmp_path / "report")
    assert "mine_mae ↓" in table and "vq-tiny" in table


def test_walkthrough_a_new_generator(add_plugin, vq_tiny_run, tmp_path, capsys):
    add_plugin("mine_bigram.py", GENERATOR_FILE)
    assert "mine-gen-tiny" in listed(capsys, "generators")

    run = tmp_path / "mine-gen-tiny"
    train(capsys, "mine-gen-tiny", run, "--tokenizer", vq_tiny_run,
          *settings("steps=3", "batch_size=16", "ckpt_every=3"))

    results = tmp_path / "results.jsonl"
    vqbench(capsys, "eval", run, "--results", results, "--n-samples", 8, "--metrics", "gfid,gkid",
            "--batch-size", 8, "--device", "cpu", "--quiet")
    rows = rows_of(results, preset="mine-gen-tiny")
    assert_finite(rows, "gfid", "gkid")
    assert {r["kind"] for r in rows} == {"generator"} and {r["model"] for r in rows} == {"bigram"}

    table = reported(capsys, results, tmp_path / "report")
    assert "mine-gen-tiny" in table and "gfid [torch-fidelity] ↓" in table


def test_walkthrough_a_new_dataset(add_plugin, tmp_path, capsys):
    add_plugin("mine_squares.py", DATASET_FILE)
    assert "mine-squares" in listed(capsys, "datasets")

    run = tmp_path / "vq-tiny-squares"
    train(capsys, "vq-tiny", run, "--dataset", "mine-squares", *settings(*TINY_TRAINING))

    results = tmp_path / "results.jsonl"
    vqbench(capsys, "eval", run, "--results", results, "--metrics", "psnr,codebook_usage", "--n-eval", 16,
            "--device", "cpu", "--quiet")       # evaluates on the dataset the run was trained on
    rows = rows_of(results, dataset="mine-squares")
    assert_finite(rows, "psnr", "codebook_usage")
    assert {r["split"] for r in rows} == {"test"} and {r["n_images"] for r in rows} == {16}

    table = reported(capsys, results, tmp_path / "report")
    assert "mine-squares" in table and "psnr ↑" in table
