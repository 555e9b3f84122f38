"""parallel=fsdp (PyTorch FSDP2) on the CPU with gloo, two processes under torchrun.

What is stated before running, with its tolerance:
- FSDP and DDP start from the same weights (same seed) and average the same gradients; only the
  order of the sums differs. Over 4 steps each logged loss agrees to 1e-4 (relative) and every tensor
  of the final checkpoint to 1e-4 (absolute), for a tokenizer (with its discriminator) and a generator.
- A sharded run stopped after its step-2 checkpoint and resumed with the same number of processes
  ends at the weights of the uninterrupted run (to 1e-6).
- A 2-process sharded checkpoint restores in one process: weights, discriminator and AdamW moments
  are exactly the ones written, and `vqbench train --resume` finishes the run there.
- Evaluation reads a sharded checkpoint as it is, and `vqbench consolidate` writes the same weights
  as one file.
"""
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from bad_input_cases import run_main
from conftest import REPO, run_cli, run_torchrun
from harness.core import checkpoint as ckpt

TRAIN = ["--n-train", "64", "--set", "steps=4", "--set", "batch_size=8", "--set", "log_every=1",
         "--set", "ckpt_every=2", "--quiet"]
GAN_AFTER_STEP_2 = ["--set", "disc_start=3"]    # the discriminator's optimizer first steps after a checkpoint


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env | {"OMP_NUM_THREADS": "1"}


def _ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _losses(run: Path, name: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(f"train/{name}")}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(ckpt.resolve(run))[0]


def _stopped_after_step_2(run: Path, copy: Path) -> Path:
    """``run`` as it was when its step-2 checkpoint had just been written (what a kill then leaves)."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step_00000004")
    (copy / "checkpoints" / "latest").write_text("step_00000002\n")
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """vq-tiny (its GAN starting at step 3, after the step-2 checkpoint) and ar-tiny (with EMA), 4 steps
    each under DDP and FSDP, checkpoints at steps 2 and 4."""
    root, env = tmp_path_factory.mktemp("fsdp"), _env()
    for mode in ("ddp", "fsdp"):
        _ok(run_torchrun(2, "train", "vq-tiny", "--run-dir", root / f"vq-{mode}", *TRAIN, *GAN_AFTER_STEP_2,
                         "--set", f"parallel={mode}", env=env))
        _ok(run_torchrun(2, "train", "ar-tiny", "--tokenizer", root / "vq-ddp", "--run-dir", root / f"ar-{mode}",
                         *TRAIN, "--set", "ema_decay=0.9", "--set", f"parallel={mode}", env=env))
    return root


def _at(run: Path, step: int) -> dict[str, torch.Tensor]:
    return ckpt.load(run / "checkpoints" / f"step_{step:08d}")[0]


def _same_updates(ddp: Path, fsdp: Path) -> None:
    """The same training, judged at the step-4 checkpoint and by the update from step 2 to 4:
    - the update of all weights together agrees to 1e-3 of its norm;
    - no weight differs by 1e-4 (one AdamW step at lr 1e-4) and at most 1 % of them by more than 1e-5.
    AdamW's first steps move a weight by about lr whatever its gradient's size, so a gradient near zero
    whose sign the summation order flips moves a few single weights apart by up to 2 lr x steps: the
    element-wise bounds allow a few such weights (2.9e-5 at most, in 0.1 % of a discriminator layer,
    seen with ATEN_CPU_CAPABILITY=default), not a different update."""
    a2, a4, b2, b4 = _at(ddp, 2), _at(ddp, 4), _at(fsdp, 2), _at(fsdp, 4)
    assert a4.keys() == b4.keys() == a2.keys() == b2.keys()
    floats = [k for k in a4 if a4[k].is_floating_point()]
    da = torch.cat([(a4[k] - a2[k]).double().flatten() for k in floats])
    db = torch.cat([(b4[k] - b2[k]).double().flatten() for k in floats])
    assert da.norm() > 0 and (da - db).norm() <= 1e-3 * da.norm()
    gap = torch.cat([(a4[k].double() - b4[k].double()).abs().flatten() for k in floats])
    share = float((gap > 1e-5).double().mean())
    assert gap.max() < 1e-4 and share <= 0.01, (float(gap.max()), share)
    for k in a4:
        if not a4[k].is_floating_point():
            assert torch.equal(a4[k], b4[k]), k


@pytest.mark.parametrize("family, loss", [("vq", "total"), ("ar", "loss")])
def test_fsdp_matches_ddp(runs, family, loss):
    ddp, fsdp = runs / f"{family}-ddp", runs / f"{family}-fsdp"
    state = ckpt.load_state(ckpt.resolve(fsdp))
    assert state["format"] == "sharded" and state["world_size"] == 2
    assert sorted(p.name for p in (ckpt.resolve(fsdp) / "sharded").iterdir()) == [".metadata", "__0_0.distcp",
                                                                                "__1_0.distcp"]
    ddp_losses, fsdp_losses = _losses(ddp, loss), _losses(fsdp, loss)
    assert sorted(ddp_losses) == [1, 2, 3, 4] == sorted(fsdp_losses)
    for step, value in ddp_losses.items():
        assert fsdp_losses[step] == pytest.approx(value, rel=1e-4), step
    weights = _weights(ddp)
    assert any(k.startswith("ema.") for k in weights) == (family == "ar")
    assert any(k.startswith("disc.") for k in weights) == (family == "vq")
    _same_updates(ddp, fsdp)


def test_an_optimizer_that_has_not_stepped_is_saved_without_state(runs):
    """Before disc_start the discriminator's AdamW has no state; writing the step-2 checkpoint must not
    create one (its first update would then use the bias correction of a second step)."""
    held = _all_tensors(runs / "vq-fsdp" / "checkpoints" / "step_00000002")
    assert any(k.startswith("optim.g.state.") for k in held)
    assert not any(k.startswith("optim.d.") for k in held)
    assert any(k.startswith("optim.d.state.") for k in _all_tensors(ckpt.resolve(runs / "vq-fsdp")))


@pytest.mark.parametrize("preset, extra", [("vq-tiny", GAN_AFTER_STEP_2),
                                           ("ar-tiny", ["--set", "ema_decay=0.9"])], ids=["vq", "ar"])
def test_sharded_run_stopped_and_resumed_ends_where_the_uninterrupted_one_does(runs, tmp_path, preset, extra):
    family = preset.split("-")[0]
    resumed = _stopped_after_step_2(runs / f"{family}-fsdp", tmp_path / "resumed")
    tokenizer = ["--tokenizer", runs / "vq-ddp"] if family == "ar" else []
    _ok(run_torchrun(2, "train", preset, *tokenizer, "--run-dir", resumed, *TRAIN, *extra, "--set", "parallel=fsdp",
                     "--resume", env=_env()))
    a, b = _all_tensors(ckpt.resolve(runs / f"{family}-fsdp")), _all_tensors(ckpt.resolve(resumed))
    assert a.keys() == b.keys() and any(k.endswith("exp_avg_sq") for k in a)
    for k in a:                          # weights, EMA and AdamW moments, bit for bit
        assert torch.equal(a[k], b[k]), k


def _all_tensors(step: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded checkpoint, whole (optimizer moments too), read in one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    reader = dcp.FileSystemReader(str(step / "sharded"))
    listed = reader.read_metadata().state_dict_metadata
    out = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in listed.items()
           if isinstance(m, TensorStorageMetadata)}
    with warnings.catch_warnings():        # DCP notes that no process group runs: the intent here
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(out, storage_reader=reader, no_dist=True)
    return out


def test_two_process_checkpoint_restores_in_one_process(runs, tmp_path):
    from harness.core.distributed import setup
    from harness.models.catalog import build_tokenizer
    from harness.training.checkpointing import RunCheckpoints
    from harness.training.train_tokenizer import TrainConfig, training_state
    run = _stopped_after_step_2(runs / "vq-fsdp", tmp_path / "one")
    step2 = run / "checkpoints" / "step_00000002"
    state = ckpt.load_state(step2)
    tc = TrainConfig(**state["train_config"])
    torch.manual_seed(123)                       # other weights than the run's: the restore must replace them
    _, model = build_tokenizer("vq-tiny")
    held, _ = training_state(model, tc, setup("cpu"))
    run_info = {k: state[k] for k in ("kind", "config_hash", "model_config", "train_config")}
    with RunCheckpoints(run, run_info, "settings", resume=True, d=setup("cpu"), sharded=True) as ckpts:
        assert ckpts.restore(held) == 2
    written = _all_tensors(step2)
    restored = held.sharded_tree()
    flat = {f"{name}.{k}": v for name, part in restored.items() if name != "optim" for k, v in part.items()}
    for name, opt_state in restored["optim"].items():
        for fqn, moments in opt_state["state"].items():
            flat |= {f"optim.{name}.state.{fqn}.{k}": v for k, v in moments.items()}
    tensors = [k for k in written if k.startswith(("model.", "disc.", "optim.g.state.", "optim.d.state."))]
    assert any(k.endswith("exp_avg_sq") for k in tensors) and any(k.startswith("disc.") for k in tensors)
    for k in tensors:
        assert torch.equal(flat[k].reshape(written[k].shape).to(written[k].dtype), written[k]), k

    # and the CLI finishes the run in one process, writing a sharded checkpoint of world size 1
    _ok(run_cli("train", "vq-tiny", "--run-dir", run, *TRAIN, *GAN_AFTER_STEP_2, "--set", "parallel=fsdp", "--resume",
                env=_env()))
    final = ckpt.load_state(ckpt.resolve(run))
    assert final["step"] == 4 and final["world_size"] == 1 and final["format"] == "sharded"


def test_evaluation_reads_sharded_checkpoints_and_consolidate_writes_one_file(runs, tmp_path):
    env = _env()
    results = tmp_path / "rows.jsonl"
    _ok(run_cli("eval", runs / "vq-fsdp", "--n-eval", "16", "--batch-size", "8", "--results", results,
                "--quiet", env=env))
    _ok(run_cli("eval", runs / "ar-fsdp", "--n-samples", "8", "--batch-size", "8", "--metrics", "gkid",
                "--results", results, "--quiet", env=env))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert {"psnr", "gkid"} <= {r["metric"] for r in rows}
    out = tmp_path / "released"
    _ok(run_cli("consolidate", runs / "ar-fsdp", "--out", out, env=env))
    assert sorted(p.name for p in out.iterdir()) == ["optimizer.safetensors", "state.json", "weights.safetensors"]
    one, ddp = ckpt.load(out)[0], _weights(runs / "ar-ddp")     # another writer's weights as the reference
    assert one.keys() == ddp.keys()
    assert all(torch.allclose(one[k].float(), ddp[k].float(), atol=1e-5, rtol=0) for k in one)
    r = run_cli("consolidate", runs / "ar-fsdp", "--out", out, env=env)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --out")


@pytest.fixture(scope="module")
def one_process_sharded_run(tmp_path_factory):
    """parallel=fsdp without torchrun: nothing to shard, but the checkpoints have the sharded format."""
    run = tmp_path_factory.mktemp("one") / "vq"
    _ok(run_cli("train", "vq-tiny", "--run-dir", run, "--n-train", "16", "--set", "steps=2", "--set", "batch_size=8",
                "--set", "parallel=fsdp", "--quiet", env=_env()))
    return run


def _edit(run: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(run, copy)
    step = ckpt.resolve(copy)
    change(step)
    return copy


def _flip_byte(step: Path) -> None:
    shard = step / "sharded" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


def _truncated_with_its_checksum(step: Path) -> None:
    """A shard cut short whose recorded sha256 was updated to match: only the reader can notice."""
    from harness.core.weights import file_sha256
    shard = step / "sharded" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    state = json.loads((step / "state.json").read_text())
    state["files"]["sharded/__0_0.distcp"] = file_sha256(shard)
    (step / "state.json").write_text(json.dumps(state))


def _state_edit(change):
    def edit(step: Path) -> None:
        state = json.loads((step / "state.json").read_text())
        change(state)
        (step / "state.json").write_text(json.dumps(state))
    return edit


@pytest.mark.parametrize("change, message", [
    (_flip_byte, "does not match its recorded sha256"),
    (_state_edit(lambda s: s["files"].update({"sharded/../../x": "0" * 64})), "malformed 'files'"),
    (_state_edit(lambda s: s["files"].pop("sharded/.metadata")), "malformed 'files'"),
    (_state_edit(lambda s: s.update(format="zero3")), "format 'zero3'"),
    (lambda step: (step / "sharded" / ".metadata").unlink(), "sharded/.metadata"),
    (_state_edit(lambda s: s["files"].pop("sharded/__0_0.distcp")), "does not list"),
    (_truncated_with_its_checksum, "corrupt"),
], ids=["flipped-byte", "path-outside", "no-metadata-entry", "unknown-format", "metadata-missing", "unlisted-shard",
        "truncated-shard-with-its-checksum"])
def test_damaged_sharded_checkpoint_is_one_error_line(one_process_sharded_run, tmp_path, change, message):
    state = ckpt.load_state(ckpt.resolve(one_process_sharded_run))
    assert state["format"] == "sharded" and state["world_size"] == 1
    run = _edit(one_process_sharded_run, tmp_path, change)
    for argv in (["eval", run, "--n-eval", "8", "--results", tmp_path / "rows.jsonl", "--quiet"],
                 ["train", "vq-tiny", "--run-dir", run, "--n-train", "16", "--set", "steps=2", "--set",
                  "batch_size=8", "--set", "parallel=fsdp", "--resume", "--quiet"]):
        rc, _, err = run_main(argv)
        assert rc == 2 and "Traceback" not in err, err[-2000:]
        assert err.strip().splitlines() == [err.strip()] and message in err, err


def test_car_on_a_pretrained_lm_two_stages_fsdp_matches_ddp(tmp_path):
    """CAR with a (tiny) pretrained causal LM as backbone and its two-stage recipe (stage I: backbone
    frozen; stage II: everything): FSDP shards the LM's decoder layers, and its losses and weights
    agree with DDP's as for the other generators."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=50, max_position_embeddings=128))
    lm.config.dtype = torch.bfloat16       # as released LMs say: every rank must still build fp32 weights
    lm.save_pretrained(tmp_path / "lm")
    pretrained = {f"model.backbone.decoder.{k}": v for k, v in lm.get_decoder().state_dict().items()}
    env = _env()
    _ok(run_cli("train", "cvq-tiny", "--run-dir", tmp_path / "cvq", "--dataset", "procedural", "--n-train", "64",
                "--set", "steps=2", "--set", "batch_size=8", "--quiet", env=env))
    car = ["car-tiny", "--tokenizer", tmp_path / "cvq", *TRAIN, "--set", f"backbone=hf:{tmp_path / 'lm'}",
           "--set", "stage1_steps=2"]
    for mode in ("ddp", "fsdp"):
        _ok(run_torchrun(2, "train", *car, "--run-dir", tmp_path / mode, "--set", f"parallel={mode}", env=env))
    ddp, fsdp = _losses(tmp_path / "ddp", "loss"), _losses(tmp_path / "fsdp", "loss")
    assert sorted(ddp) == [1, 2, 3, 4] == sorted(fsdp)
    for step, value in ddp.items():
        assert fsdp[step] == pytest.approx(value, rel=1e-4), step
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "fsdp")
    assert a.keys() == b.keys() and any(".decoder.layers.1." in k for k in a)
    _same_updates(tmp_path / "ddp", tmp_path / "fsdp")
    # stage I froze the backbone under both: at step 2 its layers are still the pretrained ones, by step 4 not
    layers = [k for k in pretrained if ".layers." in k]
    for mode in ("ddp", "fsdp"):
        step2 = ckpt.load(tmp_path / mode / "checkpoints" / "step_00000002")[0]
        assert all(torch.equal(step2[k], pretrained[k]) for k in layers), mode
        assert not all(torch.equal(_weights(tmp_path / mode)[k], pretrained[k]) for k in layers), mode
    # resumed from the stage-I checkpoint (the frozen backbone and the unused token embedding have no
    # optimizer state there), the run ends where the uninterrupted one did
    resumed = _stopped_after_step_2(tmp_path / "fsdp", tmp_path / "resumed")
    _ok(run_torchrun(2, "train", *car, "--run-dir", resumed, "--set", "parallel=fsdp", "--resume", env=env))
    a, b = _all_tensors(ckpt.resolve(tmp_path / "fsdp")), _all_tensors(ckpt.resolve(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
