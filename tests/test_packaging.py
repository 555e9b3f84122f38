"""The plugin folders must not shadow Hugging Face's `tokenizers` or OpenAI's `baselines`."""
import subprocess
import sys

from conftest import REPO


def test_import_tokenizers_from_repo_root_is_hugging_face():
    code = "import tokenizers, sys; print(tokenizers.__file__); print(hasattr(tokenizers, 'Tokenizer'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    path, has_tokenizer = out.stdout.split()
    assert not path.startswith(str(REPO)) and has_tokenizer == "True", out.stdout


def test_an_installed_baselines_package_wins_over_the_repo_folder(tmp_path):
    # stand-in for OpenAI's `baselines`, placed on the path *after* the repo root (cwd comes first)
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "__init__.py").write_text("ORIGIN = 'installed'\n")
    code = "import baselines; print(baselines.ORIGIN)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""}, check=True)
    assert out.stdout.strip() == "installed"
    assert not (REPO / "baselines" / "__init__.py").exists() and not (REPO / "tokenizers" / "__init__.py").exists()


def test_plugins_register_under_their_own_namespace():
    from harness.core.registry import TOKENIZERS
    entry = TOKENIZERS.entry("vq-tiny")
    assert entry.obj.__module__ == "vqbench_plugins.tokenizers.vq"
    assert "vqbench_plugins.tokenizers.vq" in sys.modules


def test_registry_lookups_work_in_a_fresh_process_whatever_is_imported_first():
    code = ("from harness.core.registry import TOKENIZERS, METRICS; "
            "print(TOKENIZERS.entry('vq-tiny').name, 'psnr' in METRICS, len(TOKENIZERS) > 10)")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["vq-tiny", "True", "True"]
