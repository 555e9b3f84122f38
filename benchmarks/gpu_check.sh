#!/usr/bin/env bash
# Issue #17: the CUDA path on one GPU in one command (< 8 min on an H200); results and this log land in $OUT.
#   bash benchmarks/gpu_check.sh [--no-compile] [--only train,cli,eval,nearest] ...
#   bash benchmarks/gpu_check.sh --tests      # also the -m gpu contract tests (tests/test_gpu.py), log in $OUT
# Packages the GPU image lacks travel as wheels in .device_wheels/ (git-ignored; carry it):
#   pip download --no-deps -d .device_wheels vector-quantize-pytorch einx loguru torch-einops-utils lpips torch-fidelity frozendict
set -o pipefail; cd "$(dirname "$0")/.." || exit 2
if [ -d .device_wheels ]; then python3 -m pip install -q --no-index --no-deps .device_wheels/*.whl || exit 2; fi
TESTS=0; ARGS=(); for a in "$@"; do if [ "$a" = --tests ]; then TESTS=1; else ARGS+=("$a"); fi; done
set -- "${ARGS[@]}"
export OUT="${OUT:-benchmarks/results}" && mkdir -p "$OUT" && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
RC=$?
if [ "$TESTS" = 1 ]; then
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tail -40 > "$OUT/gpu_tests.log"
  TRC=${PIPESTATUS[0]}; tail -5 "$OUT/gpu_tests.log"; [ "$RC" = 0 ] && RC=$TRC
fi
exit $RC
