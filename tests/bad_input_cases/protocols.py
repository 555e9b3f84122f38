"""Bad inputs of the evaluation protocols (issue #12): `--protocol`, `--reference`, `vqbench eval-samples` and
`vqbench reference build`.

An unknown protocol, a metric the protocol does not define, and a reference batch that is missing, not
an .npz, holds no uint8 RGB images or only part of ADM's statistics are refused in one line, before any
evaluation writes a row.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bad_input_cases import Case, World


def _npz(w: World, name: str, **arrays) -> Path:
    path = w.root / name
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _eval_generator(reference):
    return lambda w: ["eval", w.generator_run, "--results", w.results, "--protocol", "adm", "--n-samples", "4",
                      "--reference", reference(w)]


def _samples(w: World) -> Path:
    return _npz(w, "samples.npz", arr_0=_images())


CASES = [
    Case("protocol-unknown", lambda w: ["eval", w.tokenizer_run, "--results", w.results, "--protocol", "adm2"],
         "unknown protocol 'adm2'"),
    Case("protocol-does-not-define-the-metric",
         lambda w: ["eval", w.tokenizer_run, "--results", w.results, "--protocol", "clean-fid",
                    "--metrics", "precision-recall"],
         "protocol 'clean-fid' does not define precision"),
    Case("run-protocol-unknown", lambda w: ["run", "tiny", "--out", w.root / "suite", "--protocol", "nope"],
         "unknown protocol 'nope'"),
    Case("reference-missing", _eval_generator(lambda w: w.root / "missing.npz"),
         lambda w: f"--reference {w.root / 'missing.npz'}", needs_generator=True),
    Case("reference-not-an-npz", _eval_generator(lambda w: _write(w.root / "ref.npz", b"not a zip")),
         lambda w: f"--reference {w.root / 'ref.npz'} is not a readable .npz", needs_generator=True),
    Case("reference-float-images", _eval_generator(lambda w: _npz(w, "ref.npz", arr_0=_images().astype(np.float32))),
         "expected N x H x W x 3 uint8 images", needs_generator=True),
    Case("reference-without-arr_0", _eval_generator(lambda w: _npz(w, "ref.npz", images=_images())),
         "has no arr_0", needs_generator=True),
    Case("reference-with-part-of-the-statistics",
         _eval_generator(lambda w: _npz(w, "ref.npz", arr_0=_images(), mu=np.zeros(2048), sigma=np.eye(2048))),
         "but not mu_s, sigma_s", needs_generator=True),
    Case("reference-under-a-protocol-without-reference-batches",
         lambda w: ["eval", w.generator_run, "--results", w.results, "--n-samples", "4", "--protocol", "clean-fid",
                    "--metrics", "gfid", "--reference", _npz(w, "ref.npz", arr_0=_images())],
         "ADM reference batches belong to --protocol adm", needs_generator=True),
    Case("reference-for-a-tokenizer",
         lambda w: ["eval", w.tokenizer_run, "--results", w.results, "--reference", _npz(w, "ref.npz", arr_0=_images())],
         "reference batches are for generator checkpoints"),
    Case("eval-samples-without-a-reference", lambda w: ["eval-samples", _samples(w)], "give the reference"),
    Case("eval-samples-gray-images",
         lambda w: ["eval-samples", _npz(w, "samples.npz", arr_0=_images()[..., 0]), "--dataset", "procedural"],
         "expected N x H x W x 3 uint8 images"),
    Case("reference-build-too-many-images",
         lambda w: ["reference", "build", "procedural", "--split", "test", "--n-images", "100000",
                    "--out", w.root / "ref.npz"],
         "--n-images 100000"),
]


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
