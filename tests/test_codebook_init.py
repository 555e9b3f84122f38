"""Data-initialised codebooks (codebook_init="data"): codes are encoder outputs of the run's first
batches, drawn reproducibly, and the training loop starts from them (the fix of the Fashion-MNIST CVQ
collapse; README, "Codebook collapse")."""
from __future__ import annotations

import pytest
import torch

from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.data.datasets import open_dataset
from harness.models.catalog import build_tokenizer, tokenizer_config
from harness.models.quantizers.vq import VectorQuantizer
from harness.training.batches import BatchOrder
from harness.training.codebook_init import init_codebook_from_data

from conftest import run_cli


def test_codes_are_distinct_input_rows_when_there_are_enough():
    q = VectorQuantizer(16, 4)
    vectors = torch.randn(40, 4)
    q.init_from_vectors(vectors, torch.Generator().manual_seed(0))
    codes = q.codebook().detach()
    matches = (codes[:, None] == vectors[None]).all(-1)           # 16 x 40
    assert matches.any(1).all() and matches.sum(0).max() == 1      # each code is a row, no row twice


def test_fewer_rows_than_codes_repeat_with_noise_and_l2_codes_stay_unit():
    q = VectorQuantizer(10, 3, l2_norm=True)
    q.init_from_vectors(torch.randn(4, 3) * 5, torch.Generator().manual_seed(0))
    codes = q.codebook().detach()
    assert torch.allclose(codes.norm(dim=-1), torch.ones(10), atol=1e-5)
    assert len(torch.unique(codes, dim=0)) == 10                   # no two codes tie


def _init(preset: str, seed: int, **over):
    torch.manual_seed(0)                          # the same weights: only the draw's seed varies
    cfg, model = build_tokenizer(preset, {"codebook_init": "data", **over})
    ds = open_dataset("procedural", "train", resolution=cfg.resolution, channels=cfg.in_channels, n=64)
    order = BatchOrder(len(ds), 8, seed, Dist())
    init_codebook_from_data(model, ds, order, seed, Dist())
    return model, ds, order


# unnormalised lookups: an l2-normalised codebook is unit length whatever its initialisation
@pytest.mark.parametrize("preset,over", [("cvq-tiny", {}), ("vq-tiny", {"l2_norm": "false"}),
                                         ("vcq-tiny", {"l2_norm": "false"})])
def test_codes_start_at_the_scale_of_the_encoder_outputs(preset, over):
    model, ds, order = _init(preset, 0, **over)
    x, _ = ds.batch(order.indices(0))
    with torch.no_grad():
        inputs = model.quantizer_inputs(x)
    codes = model.quantizer.codebook().detach()
    _, uniform = build_tokenizer(preset, over)
    # +-1/K codes are orders of magnitude shorter than what they quantize; data codes are not
    assert uniform.quantizer.codebook().detach().norm(dim=-1).mean() < 0.1 * inputs.norm(dim=-1).mean()
    assert codes.norm(dim=-1).mean() == pytest.approx(inputs.norm(dim=-1).mean().item(), rel=0.5)


def test_the_initial_codebook_is_a_function_of_the_seed():
    a, b, c = (_init("cvq-tiny", seed)[0].quantizer.codebook().detach() for seed in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_tokenizer_without_a_codebook_of_vectors_is_refused():
    class NoCodebook(torch.nn.Module):
        cfg = None
    with pytest.raises(VQBenchError, match="codebook_init=uniform"):
        init_codebook_from_data(NoCodebook(), None, None, 0, Dist())


def test_training_starts_from_the_data_codebook(tmp_path):
    args = ("train", "cvq-tiny", "--dataset", "procedural", "--quiet", "--set", "codebook_init=data",
            "--set", "steps=4", "--set", "batch_size=8", "--set", "perceptual_weight=0", "--set", "disc_weight=0",
            "--set", "ckpt_every=2")
    full = run_cli(*args, "--run-dir", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    from safetensors.torch import load_file
    w = load_file(tmp_path / "full" / "checkpoints" / "step_00000004" / "weights.safetensors")
    codes = w["model.quantizer.embedding.weight"]
    assert codes.norm(dim=-1).mean() > 10 / tokenizer_config("cvq-tiny").codebook_size   # far from +-1/K


def test_the_fmnist_presets_that_collapsed_start_from_data():
    for preset in ("cvq-fmnist", "cvq-fmnist-drop25", "vq-fmnist-d49", "vcq-constant-fmnist", "vcq-cosine-fmnist"):
        assert tokenizer_config(preset).codebook_init == "data", preset
    assert tokenizer_config("vq-fmnist").codebook_init == "uniform"     # unit codes, unit inputs: no gap


def test_a_checkpoint_written_before_a_field_existed_loads_with_that_fields_default(tmp_path):
    """Fashion-MNIST CVQ runs trained before codebook_init existed started from +-1/K: their checkpoints
    must not be described (or rebuilt) with the preset's current "data"."""
    import json
    from harness.models.checkpoints import load_tokenizer
    r = run_cli("train", "cvq-fmnist", "--dataset", "procedural", "--quiet", "--run-dir", tmp_path / "run",
                "--set", "steps=1", "--set", "batch_size=2", "--set", "perceptual_weight=0", "--set", "disc_weight=0")
    assert r.returncode == 0, r.stderr
    state_path = next((tmp_path / "run" / "checkpoints").glob("step_*/state.json"))
    state = json.loads(state_path.read_text())
    del state["model_config"]["codebook_init"]
    state_path.write_text(json.dumps(state))
    model, _, _ = load_tokenizer(tmp_path / "run")
    assert model.cfg.codebook_init == "uniform" and tokenizer_config("cvq-fmnist").codebook_init == "data"

