"""A suite's results folder stays usable from another working directory or after it is moved."""
from __future__ import annotations

from conftest import run_cli


def test_a_generator_folder_finds_its_tokenizer_from_another_directory_or_after_a_move(tmp_path):
    """Generators record their tokenizer checkpoint as given (relative to where training ran); the suite
    folder must stay usable from elsewhere (vqbench claims --out reports/default from another directory)."""
    import json
    import shutil
    from harness.models.checkpoints import load_pair
    origin = tmp_path / "origin"
    origin.mkdir()
    tiny = ("--set", "steps=2", "--set", "batch_size=4", "--quiet")
    r = run_cli("train", "vq-tiny", "--dataset", "procedural", "--run-dir", "runs/vq", *tiny,
                "--set", "perceptual_weight=0", "--set", "disc_weight=0", cwd=origin)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "ar-tiny", "--tokenizer", "runs/vq", "--run-dir", "runs/ar", "--n-train", "16", *tiny, cwd=origin)
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "moved"
    shutil.move(origin, moved)
    assert load_pair(moved / "runs" / "ar", "cpu")[4].parent.parent == moved / "runs" / "vq"
    # a generator recorded before tokenizer_from_run existed: the sibling run folder of the recorded name
    state_path = next((moved / "runs" / "ar" / "checkpoints").glob("step_*/state.json"))
    state = json.loads(state_path.read_text())
    del state["data"]["tokenizer_from_run"]
    state_path.write_text(json.dumps(state))
    assert load_pair(moved / "runs" / "ar", "cpu")[4].parent.parent == moved / "runs" / "vq"
