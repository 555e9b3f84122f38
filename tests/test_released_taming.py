"""Released tokenizers (issue #14 item 3), second family: taming-transformers' VQGAN ImageNet f16-16384
(``vqbench import taming-vqgan-f16-16384``) onto ``vqgan-taming-f16-imagenet``.

Stated before running:
- every key of the released model (tests/data/taming_vqgan_f16_16384_state_dict.txt, written by taming's
  own VQModel: tests/data/README.md) maps to exactly one key of the preset with the same shape, every key
  of the preset is covered, and only the Lightning checkpoint's ``loss.*`` (LPIPS, discriminator) is dropped
  (the loss's keys in that list follow the released config as third-party copies quote it: tests/data/README.md);
- at small width, a taming model's weights imported into the preset reproduce taming's own latents (1e-4),
  token indices (all) and reconstruction (1e-4) (tests/data/taming_small_reference.safetensors, computed
  with taming's code on fixed inputs with weights from ``fill``); l2-normalised lookup or symmetric padding
  would not;
- a Lightning checkpoint laid out as taming's (``state_dict``, its callbacks keyed by their classes)
  goes through `vqbench import` into a run that `vqbench eval` reads and whose model still reproduces
  taming's outputs; a file with keys of another model, a missing key, an entry other than ``state_dict``
  or a pickled global other than Lightning's callback classes is refused in one line.
"""
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bad_input_cases import run_main
from harness.models import catalog
from harness.models.catalog import build_tokenizer
from harness.models.released import RELEASED, convert_taming_vq

DATA = Path(__file__).parent / "data"
NAME, PRESET = "taming-vqgan-f16-16384", "vqgan-taming-f16-imagenet"
# the small model of tests/data/taming_small_*: ch 32, ch_mult 1,1,2, attention at 8x8, z 32, embed_dim 16, K 64
SMALL = {"resolution": "32", "ch": "32", "ch_mult": "1,1,2", "z_channels": "32", "codebook_dim": "16",
         "codebook_size": "64"}


def released_shapes(name: str) -> dict[str, tuple[int, ...]]:
    lines = (DATA / name).read_text().splitlines()
    return {k: tuple(int(x) for x in s.split(",") if x) for k, s in
            (line.split(" ") for line in lines if line and not line.startswith("#"))}


def fill(key: str, shape: tuple[int, ...], i: int) -> torch.Tensor:
    """The weights the reference outputs were computed with (tests/data/make_taming_reference.py)."""
    g = torch.Generator().manual_seed(1000 + i)
    v = torch.randn(shape, generator=g)
    if ".norm" in key and key.endswith(".weight"):
        return 1 + 0.1 * v
    fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
    return v * (0.1 if len(shape) == 1 else fan_in ** -0.5)


def small_weights() -> dict[str, torch.Tensor]:
    return {k: fill(k, s, i) for i, (k, s) in enumerate(released_shapes("taming_small_state_dict.txt").items())}


def test_the_preset_is_taming_s_f16_16384_model():
    cfg, model = build_tokenizer(PRESET, device="meta")
    assert (cfg.resolution, cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.z_channels, cfg.norm_groups) == \
        (256, 128, (1, 1, 2, 2, 4), 2, 256, 32)
    assert (cfg.codebook_size, cfg.codebook_dim, cfg.l2_norm, cfg.downsample_padding, cfg.attention) == \
        (16384, 256, False, "right-bottom", True)
    assert model.grid == (16, 16)
    released = released_shapes("taming_vqgan_f16_16384_state_dict.txt")
    assert sum(p.numel() for p in model.parameters()) == \
        sum(int(torch.tensor(s).prod()) for k, s in released.items() if not k.startswith("loss."))


def test_every_released_key_maps_onto_the_preset_with_its_shape():
    shapes = released_shapes("taming_vqgan_f16_16384_state_dict.txt")
    assert len(shapes) == 392
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted = RELEASED[NAME].convert(meta)
    _, model = build_tokenizer(PRESET, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    # each model tensor lands once: 7 attention blocks' q, k, v become one qkv; only loss.* is dropped
    loss = sum(1 for k in shapes if k.startswith("loss."))
    attention = sum(1 for k in shapes if k.endswith(".q.weight"))
    assert (loss, attention) == (49, 7)
    assert len(converted) == len(shapes) - loss - 4 * attention
    # the codebook is taken as it is: K x 256, no normalisation
    assert tuple(converted["quantizer.embedding.weight"].shape) == (16384, 256)


def test_imported_weights_compute_what_taming_computes():
    weights = small_weights()
    _, model = build_tokenizer(PRESET, SMALL)
    model.load_state_dict(convert_taming_vq(weights, (1, 1, 2), 2))
    ref = load_file(DATA / "taming_small_reference.safetensors")
    model.eval()
    with torch.no_grad():
        latent = model.quant_proj(model.encoder(ref["x"]))
        out = model(ref["x"])
    torch.testing.assert_close(latent, ref["latent"], atol=1e-4, rtol=1e-4)
    assert torch.equal(out.indices, ref["indices"])
    torch.testing.assert_close(out.reconstruction, ref["reconstruction"], atol=1e-4, rtol=1e-4)
    # what makes it faithful: the plain euclidean lookup and the right-bottom padding
    for changed in ({"l2_norm": "true"}, {"downsample_padding": "symmetric"}):
        _, other = build_tokenizer(PRESET, {**SMALL, **changed})
        other.load_state_dict(convert_taming_vq(weights, (1, 1, 2), 2))
        with torch.no_grad():
            assert (other.eval()(ref["x"]).indices != ref["indices"]).any(), changed


@pytest.fixture
def small_release(monkeypatch):
    """`vqbench import taming-vqgan-f16-16384` at the small width of tests/data/taming_small_*."""
    monkeypatch.setitem(RELEASED, NAME, replace(RELEASED[NAME], ch_mult=(1, 1, 2)))
    build = catalog.build_tokenizer

    def small(preset, overrides=None, device=None):
        return build(preset, SMALL if preset == PRESET and not overrides else overrides, device)
    monkeypatch.setattr(catalog, "build_tokenizer", small)


def save_lightning(path: Path, state_dict: dict, monkeypatch, callback_module="pytorch_lightning.callbacks."
                   "model_checkpoint", callback="ModelCheckpoint") -> None:
    """A checkpoint as Lightning writes it: its callbacks' states keyed by their classes (pickled by name;
    the class exists only while saving, so reading must not import it)."""
    cls = type(callback, (), {"__module__": callback_module, "__qualname__": callback})
    with monkeypatch.context() as m:
        parts = callback_module.split(".")
        for i in range(1, len(parts) + 1):
            m.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(sys.modules[callback_module], callback, cls)
        torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
                    "callbacks": {cls: {"monitor": "val/rec_loss", "best_model_score": torch.tensor(0.5),
                                        "best_model_path": "logs/last.ckpt"}},
                    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9)}]}],
                    "lr_schedulers": [], "state_dict": state_dict}, path)
    assert getattr(sys.modules.get(callback_module), callback, None) is not cls     # gone again


def test_a_lightning_checkpoint_imports_into_a_run_that_eval_reads(tmp_path, small_release, monkeypatch):
    weights = small_weights()
    loss = {"loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4),
            "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1)}
    save_lightning(tmp_path / "last.ckpt", {**weights, **loss}, monkeypatch)
    rc, out, err = run_main(["import", NAME, tmp_path / "last.ckpt", "--out", tmp_path / "run",
                             "--dataset", "procedural"])
    assert rc == 0, err
    assert f"{NAME} imported as {PRESET}" in out
    from harness.models.checkpoints import load_tokenizer
    model, state, _ = load_tokenizer(tmp_path / "run")
    assert state["imported_from"]["name"] == NAME and state["imported_from"]["weights"] == "state_dict"
    assert state["preset"] == PRESET and state["model_config"]["ch_mult"] == [1, 1, 2]
    ref = load_file(DATA / "taming_small_reference.safetensors")
    with torch.no_grad():
        out = model(ref["x"])
    assert torch.equal(out.indices, ref["indices"])
    torch.testing.assert_close(out.reconstruction, ref["reconstruction"], atol=1e-4, rtol=1e-4)
    rc, _, err = run_main(["eval", tmp_path / "run", "--results", tmp_path / "r.jsonl", "--n-eval", "2",
                           "--batch-size", "2", "--metrics", "psnr", "--device", "cpu"])
    assert rc == 0, err
    assert (tmp_path / "r.jsonl").read_text().strip()


def test_import_refuses_other_files_in_one_line(tmp_path, small_release, monkeypatch):
    def imported(file, *more):
        rc, _, err = run_main(["import", NAME, tmp_path / file, "--out", tmp_path / "run",
                               "--dataset", "procedural", *more])
        assert rc == 2 and err.count("\n") == 1, err
        return err
    weights = small_weights()
    # a remapped codebook (VQModel's remap=...) and a conv shortcut are not this model's
    save_lightning(tmp_path / "other.ckpt", {**weights, "quantize.used": torch.arange(64),
                                             "encoder.down.0.block.0.conv_shortcut.weight": torch.zeros(1)},
                   monkeypatch)
    err = imported("other.ckpt")
    assert f"is not {NAME} ({PRESET})" in err and "2 keys are not weights of taming's VQModel" in err
    assert "quantize.used" in err and "conv_shortcut" in err
    # attention where the preset has none (taming's attn_resolutions at a higher resolution)
    save_lightning(tmp_path / "attn.ckpt", {**weights, "decoder.up.0.attn.0.norm.weight": torch.ones(32)},
                   monkeypatch)
    assert "decoder.up.0.attn.0.norm.weight" in imported("attn.ckpt")
    missing = {k: v for k, v in weights.items() if not k.startswith("decoder.conv_out.")}
    save_lightning(tmp_path / "missing.ckpt", missing, monkeypatch)
    err = imported("missing.ckpt")
    assert "2 weights missing (first: decoder.conv_out.bias, decoder.conv_out.weight)" in err
    assert "0 unexpected" in err
    # LlamaGen's layout is another family's
    torch.save({"model": {"encoder.conv_blocks.0.res.0.norm1.weight": torch.ones(32)}}, tmp_path / "llamagen.pt")
    err = imported("llamagen.pt")
    assert "has no 'state_dict' state dict (dict entries: model); use --weights state_dict" in err
    assert "'model': taming-vqgan-f16-16384's file holds state_dict" in imported("llamagen.pt", "--weights", "model")
    # only Lightning's callback classes are read as stand-ins; any other pickled global is refused
    save_lightning(tmp_path / "global.ckpt", weights, monkeypatch, callback_module="somepackage.hooks",
                   callback="Hook")
    assert "is not a PyTorch checkpoint vqbench can read safely" in imported("global.ckpt")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_full_size_import_is_a_run_that_eval_reads(tmp_path, monkeypatch):
    """76M random weights of the released shapes (and the loss's), saved as taming's Lightning checkpoint."""
    shapes = released_shapes("taming_vqgan_f16_16384_state_dict.txt")
    g = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    save_lightning(tmp_path / "last.ckpt", weights, monkeypatch)
    rc, _, err = run_main(["import", NAME, tmp_path / "last.ckpt", "--out", tmp_path / "run",
                           "--dataset", "procedural"])
    assert rc == 0, err
    from harness.models.checkpoints import load_tokenizer
    model, state, _ = load_tokenizer(tmp_path / "run")
    converted = RELEASED[NAME].convert(weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in converted.items())
    rc, _, err = run_main(["eval", tmp_path / "run", "--results", tmp_path / "r.jsonl",
                           "--n-eval", "2", "--batch-size", "2", "--metrics", "psnr", "--device", "cpu"])
    assert rc == 0, err
