"""Checkpoints are verified before use: recorded sha256 of the tensor files, a validated state.json, a
``latest`` pointer confined to its checkpoints folder, and tensor files that never run pickled code."""
import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO
from harness.core import checkpoint as ckpt
from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.core.weights import file_sha256


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tokenizer_helpers import train_tiny_vq
    run = tmp_path_factory.mktemp("template") / "run"
    train_tiny_vq(run)
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of a two-step vq-tiny run."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst, symlinks=True)
    return dst


def _step(run: Path) -> Path:
    return run / "checkpoints" / "step_00000002"


def _edit_state(run: Path, edit) -> None:
    f = _step(run) / "state.json"
    f.write_text(json.dumps(edit(json.loads(f.read_text()))))


def _refused(target, *names, match=None):
    """``ckpt.load(ckpt.resolve(target))`` raises one line of VQBenchError that names every one of ``names``."""
    with pytest.raises(VQBenchError) as e:
        ckpt.load(ckpt.resolve(target))
    msg = str(e.value)
    assert "\n" not in msg
    for n in names:
        assert str(n) in msg, msg
    if match:
        assert match in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- checksums
def test_state_records_the_sha256_of_both_tensor_files(run):
    state = json.loads((_step(run) / "state.json").read_text())
    assert set(state["files"]) == {"weights.safetensors", "optimizer.safetensors"}
    for name, digest in state["files"].items():
        assert digest == file_sha256(_step(run) / name)
    weights, optim, loaded = ckpt.load(ckpt.resolve(run))     # the untouched checkpoint loads
    assert loaded["step"] == 2 and weights and optim


def _flip_a_data_byte(file: Path) -> None:
    """Change one byte of the tensor data (the header stays valid: safetensors alone cannot notice)."""
    data = bytearray(file.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + 5] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["weights.safetensors", "optimizer.safetensors"])
def test_a_flipped_byte_is_caught_by_the_checksum(run, name):
    from safetensors.torch import load_file
    _flip_a_data_byte(_step(run) / name)
    load_file(_step(run) / name)                      # still a well-formed file: only the checksum notices
    msg = _refused(run, f"{_step(run)}/{name}", match="does not match its recorded sha256")
    assert "restore it or train again" in msg


def test_every_model_loader_verifies(run):
    from harness.models.checkpoints import load_tokenizer
    _flip_a_data_byte(_step(run) / "weights.safetensors")
    with pytest.raises(VQBenchError, match="weights.safetensors does not match its recorded sha256"):
        load_tokenizer(run)


def test_checkpoints_without_checksums_still_load(run):
    _edit_state(run, lambda s: {k: v for k, v in s.items() if k != "files"})
    weights, _, state = ckpt.load(ckpt.resolve(run))
    assert "files" not in state and weights


@pytest.mark.parametrize("corrupt", [
    lambda f: f.write_bytes(f.read_bytes()[:-10]),           # truncated
    lambda f: f.write_bytes(b""),                            # zero bytes
    lambda f: f.write_bytes(b"\xff" * 64),                   # garbage header
])
def test_corrupt_safetensors_of_an_old_checkpoint_is_one_line(run, corrupt):
    _edit_state(run, lambda s: {k: v for k, v in s.items() if k != "files"})   # no checksum to catch it
    corrupt(_step(run) / "weights.safetensors")
    _refused(run, _step(run) / "weights.safetensors", match="unreadable or corrupt")


def test_a_missing_tensor_file_is_named(run):
    (_step(run) / "optimizer.safetensors").unlink()
    _refused(run, "optimizer.safetensors")


def test_a_malformed_files_entry_is_refused(run):
    _edit_state(run, lambda s: s | {"files": {"weights.safetensors": "abc"}})
    _refused(run, _step(run) / "state.json", match="'files'")


# ------------------------------------------------------------------------------------------ state.json
@pytest.mark.parametrize("text, match", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('"step"', "holds a JSON str"),
    ("\xff\xfe", "not readable JSON"),
])
def test_state_json_that_is_not_an_object(run, text, match):
    (_step(run) / "state.json").write_text(text, encoding="latin-1")
    _refused(_step(run), _step(run) / "state.json", match=match)


@pytest.mark.parametrize("edit, match", [
    (lambda s: {k: v for k, v in s.items() if k != "step"}, "lacks 'step'"),
    (lambda s: {k: v for k, v in s.items() if k != "kind"}, "lacks 'kind'"),
    (lambda s: s | {"step": "abc"}, "has step 'abc'"),
    (lambda s: s | {"step": -1}, "has step -1"),
    (lambda s: s | {"step": 2.5}, "has step 2.5"),
    (lambda s: s | {"step": True}, "has step True"),
    (lambda s: s | {"step": 7}, "says step 7 but lies in step_00000002"),
    (lambda s: s | {"kind": 3}, "has kind 3"),
    (lambda s: {k: v for k, v in s.items() if k != "model_config"}, "lacks 'model_config'"),
    (lambda s: s | {"preset": ["vq-tiny"]}, "lacks 'preset'"),
])
def test_hand_edited_state_json_is_one_line(run, edit, match):
    _edit_state(run, edit)
    _refused(run, _step(run) / "state.json", match=match)
    with pytest.raises(VQBenchError, match="state.json"):
        ckpt.load_state(_step(run))                   # the no-tensors reader checks the same


def test_hand_edited_state_is_refused_by_resume_too(run):
    from harness.training.train_tokenizer import train_tokenizer
    from tokenizer_helpers import TINY_VQ_SETTINGS
    _edit_state(run, lambda s: s | {"step": "abc"})
    with pytest.raises(VQBenchError, match="has step 'abc'"):
        train_tokenizer("vq-tiny", run, overrides=list(TINY_VQ_SETTINGS), dataset="procedural",
                        resume=True, progress=False)


def test_edited_rng_state_on_resume_is_one_line(run):
    from harness.training.train_tokenizer import train_tokenizer
    from tokenizer_helpers import TINY_VQ_SETTINGS
    _edit_state(run, lambda s: s | {"rng": {"torch": 5}})
    with pytest.raises(VQBenchError, match="does not fit this run"):
        train_tokenizer("vq-tiny", run, overrides=list(TINY_VQ_SETTINGS), dataset="procedural", resume=True,
                        progress=False)


# ------------------------------------------------------------------------------------------- the pointer
@pytest.mark.parametrize("content", [
    "/etc", "../../elsewhere/step_00000002", "step_00000002/../step_00000002", "step_2", "step_000000002",
    "latest", "", "   \n", "STEP_00000002", "step_0000000a", "./step_00000002",
])
def test_latest_must_name_a_step_folder_inside(run, content):
    (run / "checkpoints" / "latest").write_text(content)
    _refused(run, run / "checkpoints" / "latest")


def test_latest_naming_a_missing_step(run):
    (run / "checkpoints" / "latest").write_text("step_00000009\n")
    _refused(run, "step_00000009", match="missing or incomplete")


def test_latest_as_a_symlink_is_refused(run, tmp_path):
    pointer = run / "checkpoints" / "latest"
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("step_00000002\n")
    pointer.unlink()
    pointer.symlink_to(outside)
    _refused(run, pointer, match="symbolic link")
    pointer.unlink()
    pointer.symlink_to("latest")                   # a loop
    _refused(run, pointer, match="symbolic link")


def test_a_step_folder_linking_outside_the_run_is_refused(run, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(str(_step(run)), outside)
    _step(run).symlink_to(outside, target_is_directory=True)
    _refused(run, _step(run), match="leads outside")


def test_a_symlink_loop_in_the_run_folder_is_named(run):
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(run / "checkpoints")
    with pytest.raises(VQBenchError, match="symbolic link loop") as e:
        ckpt.resolve(run)
    assert str(run / "checkpoints") in str(e.value)


def test_a_symlink_loop_given_as_the_run_is_named(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(VQBenchError, match="symbolic link loop") as e:
        ckpt.resolve(loop)
    assert str(loop) in str(e.value)


def test_resume_into_a_symlink_loop_is_named(tmp_path):
    from harness.training.train_tokenizer import train_tokenizer
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(run / "checkpoints")
    with pytest.raises(VQBenchError, match="symbolic link loop"):
        train_tokenizer("vq-tiny", run, overrides=["steps=1"], dataset="procedural", resume=True, progress=False)


# ------------------------------------------------------------------------------ no pickled code is run
class _Payload:
    """Unpickling this writes ``marker``: the proof that a loader executed pickled code."""
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _payload_file(path: Path, marker: Path, how: str = "torch") -> Path:
    if how == "torch":
        torch.save({"indices": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    return path


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_the_payload_is_live(tmp_path, how):
    """Control: the payload does run when loaded unsafely, so the tests below would notice."""
    marker = tmp_path / "marker"
    f = _payload_file(tmp_path / "evil.pt", marker, how)
    torch.load(f, weights_only=False) if how == "torch" else pickle.loads(f.read_bytes())
    assert marker.exists()


@pytest.fixture(scope="module")
def tiny_tokenizer(trained):
    from harness.models.checkpoints import load_tokenizer
    model, _, path = load_tokenizer(trained)
    return model


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_a_pickle_in_the_token_cache_never_runs(tmp_path, tiny_tokenizer, how):
    from harness.training.token_data import token_cache, tokenize_split
    marker = tmp_path / "marker"
    cache = token_cache(tmp_path, "procedural", 16)
    assert cache.suffix == ".safetensors"
    _payload_file(cache, marker, how)
    with pytest.raises(VQBenchError, match="token cache .* unreadable or corrupt") as e:
        tokenize_split(tiny_tokenizer, "procedural", "train", 16, cache, Dist())
    assert str(cache) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_an_old_pt_cache_is_ignored_and_the_split_encoded_again(tmp_path, tiny_tokenizer):
    from harness.training.token_data import token_cache, tokenize_split
    marker = tmp_path / "marker"
    cache = token_cache(tmp_path, "procedural", 16)
    old = cache.with_name(cache.name.replace(".safetensors", ".pt"))       # where earlier versions cached
    _payload_file(old, marker)
    indices, labels = tokenize_split(tiny_tokenizer, "procedural", "train", 16, cache, Dist())
    assert not marker.exists() and cache.exists()
    again, again_labels = tokenize_split(tiny_tokenizer, "procedural", "train", 16, cache, Dist())   # from the cache
    assert torch.equal(indices, again) and torch.equal(labels, again_labels) and len(labels) == 16


def test_a_token_cache_with_wrong_tensors_is_refused(tmp_path, tiny_tokenizer):
    from safetensors.torch import save_file
    from harness.training.token_data import tokenize_split
    cache = tmp_path / "tokens.safetensors"
    for tensors, match in [({"indices": torch.zeros(4, 3)}, "does not hold"),
                           ({"indices": torch.zeros(4, 3, dtype=torch.long), "labels": torch.zeros(5, dtype=torch.long)},
                            "does not hold"),
                           ({"indices": torch.full((4, 3), 10 ** 6), "labels": torch.zeros(4, dtype=torch.long)},
                            "outside 0..")]:
        save_file(tensors, cache)
        with pytest.raises(VQBenchError, match=match):
            tokenize_split(tiny_tokenizer, "procedural", "train", 4, cache, Dist())


def test_a_pickle_in_place_of_weights_never_runs(run, tmp_path):
    marker = tmp_path / "marker"
    _payload_file(_step(run) / "weights.safetensors", marker)
    _edit_state(run, lambda s: {k: v for k, v in s.items() if k != "files"})
    _refused(run, "weights.safetensors")
    assert not marker.exists()


def test_a_pickle_token_file_for_entropy_never_runs(tmp_path):
    from harness.evaluation.entropy import load_token_file
    marker = tmp_path / "marker"
    f = _payload_file(tmp_path / "tokens.pt", marker)
    with pytest.raises(VQBenchError, match="pickled objects"):
        load_token_file(f)
    assert not marker.exists()


def test_no_unsafe_torch_load_in_the_package():
    """Every torch.load in harness/ passes weights_only=True (no code runs from a tensor file)."""
    unsafe = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unsafe, unsafe
