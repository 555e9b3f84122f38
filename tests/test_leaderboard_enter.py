"""`vqbench enter TRACK --plugin FILE` (issue #14 item 2): a new quantizer from one file trains and is evaluated
exactly as the track's template run, lands in the track's suite folder and table, and the site is rebuilt.
The real track's recipe (fmnist-49tok: 200 steps and the full evaluation) takes minutes, so the fast test
uses a track on the `tiny` suite; the slow one enters fmnist-49tok itself."""
import json
import textwrap

import pytest

from harness.core.errors import VQBenchError
from harness.core.registry import TRACKS
from harness.leaderboard.ar_probe import ARProbe
from harness.leaderboard.tracks import Track

SIGN_VQ = textwrap.dedent('''
    from dataclasses import dataclass
    import torch
    from harness.core.registry import TOKENIZERS
    from harness.models.conv_tokenizer import FMNIST_BACKBONE, TINY_BACKBONE, ConvBackbone, ConvTokenizer
    from harness.models.quantizers.base import Quantizer, QuantizerOutput

    class SignQuantizer(Quantizer):
        def __init__(self, dim, beta):
            super().__init__()
            self.codebook_size, self.code_dim, self.beta = 2 ** dim, dim, beta
            self.register_buffer("bit_values", 2 ** torch.arange(dim), persistent=False)

        def forward(self, z):
            indices = ((z > 0).long() * self.bit_values).sum(-1)
            q = self.lookup(indices).to(z.dtype)
            losses = {"commitment": self.beta * (z - q).pow(2).mean()}
            return QuantizerOutput(z + (q - z).detach() if z.requires_grad else q, indices, losses)

        def lookup(self, indices):
            return ((indices.unsqueeze(-1) & self.bit_values) > 0).float() * 2 - 1

    @dataclass(frozen=True)
    class SignConfig(ConvBackbone):
        beta: float = 0.25
        def build(self):
            return SignTokenizer(self)

    class SignTokenizer(ConvTokenizer):
        family = "signvq"
        def make_quantizer(self, cfg):
            return SignQuantizer(cfg.codebook_dim, cfg.beta)

    @TOKENIZERS.register("__PRESET__", family="signvq", scale="tiny", description="sign quantizer, __DIM__ bits per token")
    def preset() -> SignConfig:
        return SignConfig(**__BACKBONE__, codebook_dim=__DIM__)
''')


def plugin(tmp_path, preset, backbone="TINY_BACKBONE", dim=6):
    path = tmp_path / f"{preset.replace('-', '_')}.py"
    path.write_text(SIGN_VQ.replace("__PRESET__", preset).replace("__BACKBONE__", backbone).replace("__DIM__", str(dim)))
    return path


@pytest.fixture
def tiny_track():
    TRACKS.add("test-tiny", Track(name="test-tiny", description="the tiny suite as a track", dataset="procedural",
                                  resolution=16, tokens=64, training="6 steps", protocol="torch-fidelity",
                                  suite="tiny", tokenizer_template="vq-tiny", generator_template="ar-tiny@vq-tiny",
                                  ar_probe=ARProbe(template="ar-tiny@vq-tiny", suite="test-tiny-ar-probe",
                                                   likelihood_n=16)),
               description="test")
    yield "test-tiny"
    TRACKS._entries.pop("test-tiny", None)


def test_enter_trains_evaluates_and_adds_the_entry_to_the_track(tiny_track, tmp_path, monkeypatch):
    from harness.cli import main
    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny"
    assert main(["enter", tiny_track, "--plugin", str(plugin(tmp_path, "sign-entry-tiny")), "--out", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    mine = [r for r in rows if r["run_id"] == "tiny/sign-entry-tiny"]
    assert {r["metric"] for r in mine} >= {"psnr", "ssim", "codebook_usage", "probe_top1_k1", "cond_entropy_bits"}
    state = json.loads(next((out / "runs" / "sign-entry-tiny" / "checkpoints").glob("step_*/state.json")).read_text())
    assert state["preset"] == "sign-entry-tiny" and state["train_config"]["steps"] == 6   # the template's recipe
    page = (out / "site" / "track-test-tiny.html").read_text()
    assert "tiny/sign-entry-tiny" in page and "signvq" in page
    assert "tiny/vq-tiny" not in page              # only runs the folder holds: the entry alone here
    from harness.leaderboard.site import entry_id
    entry = (out / "site" / f"entry-{entry_id('tiny/sign-entry-tiny')}.html").read_text()
    assert "checkpoint sha256 (weights)" in entry and "(weights.safetensors)" in entry and "training wall time" in entry
    assert (out / "site" / "figures" / entry_id("tiny/sign-entry-tiny") / "reconstructions.png").stat().st_size > 0
    assert (out / "site" / "figures" / entry_id("tiny/sign-entry-tiny") / "codebook-usage.pdf").stat().st_size > 0
    # a tokenizer entry also gets the track's AR probe on its tokens
    assert {"nll_bits_per_image", "gfid"} <= {r["metric"] for r in rows
                                              if r["run_id"] == "test-tiny-ar-probe/ar-probe@sign-entry-tiny"}
    assert "AR probe nll_bits_per_image" in page


def test_enter_refuses_a_file_without_a_preset_and_a_taken_label(tiny_track, tmp_path):
    from harness.leaderboard.enter import enter
    empty = tmp_path / "nothing.py"
    empty.write_text("x = 1\n")
    with pytest.raises(VQBenchError, match="registers 0 presets"):
        enter(tiny_track, empty, tmp_path / "out")
    with pytest.raises(VQBenchError, match="already has a run of that name"):
        enter(tiny_track, plugin(tmp_path, "sign-taken-tiny"), tmp_path / "out", label="vq-tiny")
    with pytest.raises(VQBenchError, match="not a Python file"):
        enter(tiny_track, tmp_path / "missing.py", tmp_path / "out")
    with pytest.raises(VQBenchError, match="takes no new entries"):
        enter("imagenet256-256tok", plugin(tmp_path, "sign-imagenet-tiny"), tmp_path / "out")
    for bad in ("../escape", "a/b", "mine.seed1", "-x"):
        with pytest.raises(VQBenchError, match="--label"):
            enter(tiny_track, plugin(tmp_path, "sign-label-tiny"), tmp_path / "out", label=bad)
    with pytest.raises(VQBenchError, match="gives 49 tokens at 28 px; track test-tiny is 64 tokens at 16 px"):
        enter(tiny_track, plugin(tmp_path, "sign-fmnist-size", "FMNIST_BACKBONE", 10), tmp_path / "out")
    assert not (tmp_path / "out").exists()                      # refused before anything was written


def test_a_plugin_already_on_the_plugin_path_is_found(tmp_path):
    """The README tells users to keep the file in $VQBENCH_PLUGIN_PATH for later commands: entering it again
    finds its preset (the module loaded from that folder) instead of importing it twice."""
    from harness.core.plugins import load_plugin_file
    from harness.leaderboard.enter import plugin_presets
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    path = plugin(folder, "sign-path-tiny")
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("vqbench_plugins.my_plugins.sign_path_tiny", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)                       # as load_plugins imports a plugin folder's file
    try:
        assert plugin_presets(path) == (["sign-path-tiny"], [])
        assert load_plugin_file(path) == spec.name
    finally:
        from harness.core.registry import TOKENIZERS
        TOKENIZERS._entries.pop("sign-path-tiny", None)
        sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_enter_fmnist_track(tmp_path, monkeypatch):
    """The real track: the entry trains 200 steps, gets the template's full evaluation and the track's AR probe
    (800 steps on its tokens; a few minutes)."""
    from harness.leaderboard.enter import enter
    index = enter("fmnist-49tok", plugin(tmp_path, "sign-fmnist-tiny", "FMNIST_BACKBONE", 10), tmp_path / "default",
                  progress=False, device="cpu")
    page = (index.parent / "track-fmnist-49tok.html").read_text()
    assert "default/sign-fmnist-tiny" in page and "AR probe nll_bits_per_image" in page
    rows = [json.loads(line) for line in open(tmp_path / "default" / "results.jsonl")]
    assert {"nll_bits_per_image", "gfid"} <= {r["metric"] for r in rows
                                              if r["run_id"] == "ar-probe/ar-probe@sign-fmnist-tiny"}
