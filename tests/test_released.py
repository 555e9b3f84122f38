"""Released tokenizers (issue #14 item 3): LlamaGen's VQ-16 and VQ-8 onto vq-f16-imagenet / vq-f8-imagenet.

Stated before running:
- every key of the released model (the list in tests/data, built from LlamaGen's definition) maps to
  exactly one key of the preset with the same shape, and every key of the preset is covered;
- at small width, a LlamaGen model's weights imported into the preset reproduce LlamaGen's own latents
  (1e-4), token indices (all) and reconstruction (1e-4): tests/data/llamagen_small_reference.safetensors
  holds the outputs of LlamaGen's code on fixed inputs with weights from the fill rule below;
- `vqbench import` refuses a missing file, a file that is not a checkpoint and one of another model, in
  one line each; a full-size import (slow) writes a run `vqbench eval` reads.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bad_input_cases import run_main
from harness.models.catalog import build_tokenizer
from harness.models.released import RELEASED, convert_llamagen_vq

DATA = Path(__file__).parent / "data"


def released_shapes(name: str) -> dict[str, tuple[int, ...]]:
    lines = (DATA / name).read_text().splitlines()
    return {k: tuple(int(x) for x in s.split(",") if x) for k, s in
            (line.split(" ") for line in lines if line and not line.startswith("#"))}


@pytest.mark.parametrize("name,file,count", [("llamagen-vq16", "llamagen_vq16_state_dict.txt", 344),
                                             ("llamagen-vq8", "llamagen_vq8_state_dict.txt", 300)])
def test_every_released_key_maps_onto_the_preset_with_its_shape(name, file, count):
    shapes = released_shapes(file)
    assert len(shapes) == count
    released = RELEASED[name]
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted = released.convert(meta)
    _, model = build_tokenizer(released.preset, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    # each released tensor lands once: the 7 attention blocks' q, k, v become one qkv, one buffer is dropped
    attention = sum(1 for k in shapes if k.endswith(".q.weight"))
    assert len(converted) == count - 1 - 4 * attention


def fill(key: str, shape: tuple[int, ...], i: int) -> torch.Tensor:
    """The weights the reference outputs were computed with (tests/data/llamagen_small_reference)."""
    g = torch.Generator().manual_seed(1000 + i)
    v = torch.randn(shape, generator=g)
    if key.endswith("codebook_used"):
        return torch.zeros(shape)
    if ".norm" in key and key.endswith(".weight"):
        return 1 + 0.1 * v
    fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
    return v * (0.1 if len(shape) == 1 else fan_in ** -0.5)


def test_imported_weights_compute_what_llamagen_computes():
    shapes = released_shapes("llamagen_small_state_dict.txt")
    weights = {k: fill(k, s, i) for i, (k, s) in enumerate(shapes.items())}
    _, model = build_tokenizer("vq-f16-imagenet", {"resolution": "32", "ch": "32", "ch_mult": "1,1,2",
                                                   "z_channels": "32", "codebook_size": "64"})
    model.load_state_dict(convert_llamagen_vq(weights, (1, 1, 2), 2))
    ref = load_file(DATA / "llamagen_small_reference.safetensors")
    model.eval()
    with torch.no_grad():
        latent = model.quant_proj(model.encoder(ref["x"]))
        out = model(ref["x"])
    torch.testing.assert_close(latent, ref["latent"], atol=1e-4, rtol=1e-4)
    assert torch.equal(out.indices, ref["indices"])
    torch.testing.assert_close(out.reconstruction, ref["reconstruction"], atol=1e-4, rtol=1e-4)
    # the padding is what makes it faithful: the symmetric downsampling of the other presets is not
    _, symmetric = build_tokenizer("vq-f16-imagenet", {"resolution": "32", "ch": "32", "ch_mult": "1,1,2",
                                                       "z_channels": "32", "codebook_size": "64",
                                                       "downsample_padding": "symmetric"})
    symmetric.load_state_dict(convert_llamagen_vq(weights, (1, 1, 2), 2))
    with torch.no_grad():
        assert (symmetric.eval()(ref["x"]).indices != ref["indices"]).any()


def test_import_refuses_bad_files_in_one_line(tmp_path):
    def imported(file, *more):
        return run_main(["import", "llamagen-vq16", tmp_path / file, "--out", tmp_path / "run",
                         "--dataset", "procedural", *more])
    rc, _, err = imported("absent.pt")
    assert rc == 2 and "absent.pt does not exist" in err
    (tmp_path / "text.pt").write_text("not a checkpoint")
    rc, _, err = imported("text.pt")
    assert rc == 2 and "is not a PyTorch checkpoint vqbench can read safely" in err
    (tmp_path / "empty.pt").write_bytes(b"")
    rc, _, err = imported("empty.pt")
    assert rc == 2 and err.count("\n") == 1 and "empty.pt is not a PyTorch checkpoint" in err
    torch.save({"model": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    rc, _, err = imported("other.pt")
    assert rc == 2 and "is not llamagen-vq16 (vq-f16-imagenet)" in err and "weights missing" in err
    rc, _, err = run_main(["import", "llamagen-vq16", tmp_path / "other.pt", "--out", tmp_path / "run",
                           "--dataset", "imagenet"])
    assert rc == 2 and "imagenet" in err and "unknown" in err.lower()
    rc, _, err = imported("other.pt", "--weights", "ema")
    assert rc == 2 and "has no 'ema' state dict (dict entries: model)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_full_size_import_is_a_run_that_eval_reads(tmp_path):
    """72M random weights of the released shapes, saved as LlamaGen's scripts save them (about 20 s)."""
    import argparse
    shapes = released_shapes("llamagen_vq16_state_dict.txt")
    g = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    torch.save({"model": weights, "args": argparse.Namespace(vq_model="VQ-16")}, tmp_path / "vq_ds16_c2i.pt")
    rc, out, err = run_main(["import", "llamagen-vq16", tmp_path / "vq_ds16_c2i.pt", "--out", tmp_path / "run",
                             "--dataset", "procedural"])
    assert rc == 0, err
    from harness.models.checkpoints import load_tokenizer
    model, state, _ = load_tokenizer(tmp_path / "run")
    assert state["imported_from"]["name"] == "llamagen-vq16" and state["preset"] == "vq-f16-imagenet"
    converted = RELEASED["llamagen-vq16"].convert(weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in converted.items())
    rc, out, err = run_main(["eval", tmp_path / "run", "--results", tmp_path / "r.jsonl",
                             "--n-eval", "2", "--batch-size", "2", "--metrics", "psnr", "--device", "cpu"])
    assert rc == 0, err
    rc, _, err = run_main(["import", "llamagen-vq16", tmp_path / "vq_ds16_c2i.pt", "--out", tmp_path / "run",
                           "--dataset", "procedural"])
    assert rc == 2 and "already holds checkpoints" in err


def test_right_bottom_padding_needs_a_divisible_resolution():
    from harness.core.errors import VQBenchError
    with pytest.raises(VQBenchError, match="divisible by 16"):
        build_tokenizer("vq-f16-imagenet", {"resolution": "250"}, device="meta")


def test_checkpoints_written_before_the_padding_option_load_with_symmetric_padding(tmp_path):
    """A vq-f16-imagenet checkpoint whose model_config predates downsample_padding was trained with
    padding on every side; it must not silently load with the preset's new right-bottom padding."""
    from harness.core import checkpoint as ckpt
    from harness.core.config import to_dict
    from harness.models.checkpoints import load_tokenizer
    from harness.models.nn import RightBottomPaddedConv
    small = {"resolution": "32", "ch": "32", "ch_mult": "1,1,2", "z_channels": "32", "codebook_size": "64",
             "downsample_padding": "symmetric"}
    cfg, model = build_tokenizer("vq-f16-imagenet", small)
    old_config = {k: v for k, v in to_dict(cfg).items() if k != "downsample_padding"}
    state = {"kind": "tokenizer", "preset": "vq-f16-imagenet", "model_config": old_config,
             "train_config": {"seed": 0}, "data": {"dataset": "procedural"}, "config_hash": "old", "step": 1}
    ckpt.save(tmp_path / "checkpoints", 1, {f"model.{k}": v for k, v in model.state_dict().items()}, {}, state)
    loaded, _, _ = load_tokenizer(tmp_path)
    assert not any(isinstance(m, RightBottomPaddedConv) for m in loaded.modules())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x).indices, model.eval()(x).indices)
