"""Bad option values, names and paths given to the CLI (checked where they enter)."""
from __future__ import annotations

import pickle

import numpy as np

from bad_input_cases import Case

UNWRITABLE = "/sys/vqbench-cannot-write-here"     # EACCES even for root


def _eval(w, *extra):
    return ["eval", w.tokenizer_run, "--results", w.results, "--n-eval", "8", "--quiet", *extra]


def _train(w, *extra):
    return ["train", "vq-tiny", "--run-dir", w.root / "new-run", "--dataset", "procedural", "--quiet", *extra]


def _sample(w, *extra):
    return ["sample", w.tokenizer_run, "--out", w.root / "s.npz", *extra]


def _entropy_file(w, name, array):
    path = w.root / name
    np.save(path, array)
    return path


def _pickle_tokens(w):
    from bad_input_cases.checkpoints import _Payload     # if it ever ran, the protected store would change
    path = w.root / "tokens.npy"
    path.write_bytes(pickle.dumps(_Payload(w.results)))
    return path


CASES = [
    # counts and sizes
    Case("eval-n-eval-zero", lambda w: _eval(w, "--n-eval", "0"), "--n-eval"),
    Case("eval-n-eval-negative", lambda w: _eval(w, "--n-eval", "-3"), "--n-eval"),
    Case("eval-n-eval-float", lambda w: _eval(w, "--n-eval", "2.5"), "--n-eval"),
    Case("eval-batch-size-zero", lambda w: _eval(w, "--batch-size", "0"), "--batch-size"),
    Case("eval-batch-size-word", lambda w: _eval(w, "--batch-size", "many"), "--batch-size"),
    Case("eval-n-samples-zero", lambda w: _eval(w, "--n-samples", "0"), "--n-samples"),
    Case("eval-seed-negative", lambda w: _eval(w, "--seed", "-1"), "--seed"),
    Case("train-n-train-zero", lambda w: _train(w, "--n-train", "0"), "--n-train"),
    Case("train-n-train-negative", lambda w: _train(w, "--n-train", "-5"), "--n-train"),
    Case("sample-n-zero", lambda w: _sample(w, "--n", "0"), "--n"),
    Case("sample-batch-size-negative", lambda w: _sample(w, "--batch-size", "-4"), "--batch-size"),
    Case("probe-n-train-zero", lambda w: ["probe", w.tokenizer_run, "--results", w.results, "--n-train", "0"],
         "--n-train"),
    Case("probe-ks-word", lambda w: ["probe", w.tokenizer_run, "--results", w.results, "--ks", "1,ten"], "--ks"),
    Case("probe-ks-zero", lambda w: ["probe", w.tokenizer_run, "--results", w.results, "--ks", "0,all"], "--ks"),
    Case("progressive-ks-zero", lambda w: ["progressive", w.tokenizer_run, "--results", w.results, "--ks", "0"],
         "--ks"),
    Case("progressive-ks-negative", lambda w: ["progressive", w.tokenizer_run, "--results", w.results,
                                               "--ks", "-1"], "--ks"),
    # sampler values
    Case("sample-temperature-nan", lambda w: _sample(w, "--temperature", "nan"), "--temperature"),
    Case("sample-temperature-zero", lambda w: _sample(w, "--temperature", "0"), "--temperature"),
    Case("sample-top-p-above-one", lambda w: _sample(w, "--top-p", "1.5"), "--top-p"),
    Case("sample-top-p-zero", lambda w: _sample(w, "--top-p", "0"), "--top-p"),
    Case("sample-top-k-negative", lambda w: _sample(w, "--top-k", "-1"), "--top-k"),
    Case("sample-cfg-scale-inf", lambda w: _sample(w, "--cfg-scale", "inf"), "--cfg-scale"),
    Case("sample-cfg-power-negative", lambda w: _sample(w, "--cfg-power", "-2"), "--cfg-power"),
    Case("sample-cfg-schedule-unknown", lambda w: _sample(w, "--cfg-schedule", "sine"), "--cfg-schedule"),
    Case("sample-decoding-steps-negative", lambda w: _sample(w, "--steps", "-8"), "--steps"),
    Case("sample-from-a-tokenizer", lambda w: _sample(w, "--n", "4"), "generator"),
    # analyses
    Case("schedule-k-min-zero", lambda w: ["analyze", "schedule", "--k-min", "0"], "--k-min"),
    Case("schedule-length-zero", lambda w: ["analyze", "schedule", "--length", "0"], "--length"),
    Case("schedule-k-min-above-k-max", lambda w: ["analyze", "schedule", "--k-min", "100", "--k-max", "10"],
         "k_min"),
    Case("schedule-power-nan", lambda w: ["analyze", "schedule", "--power", "nan"], "--power"),
    Case("schedule-out-is-a-folder", lambda w: ["analyze", "schedule", "--out", w.root], lambda w: str(w.root)),
    Case("schedule-out-unwritable", lambda w: ["analyze", "schedule", "--out", UNWRITABLE + "/k.csv"],
         "vqbench-cannot-write-here"),
    Case("cliff-dataset-size-one", lambda w: ["analyze", "cliff", "--dataset-size", "1", "--codebook-size", "16"],
         "--dataset-size"),
    Case("cliff-codebook-size-zero", lambda w: ["analyze", "cliff", "--dataset-size", "100", "--codebook-size",
                                                "0"], "--codebook-size"),
    Case("entropy-threshold-nan", lambda w: ["analyze", "entropy", _entropy_file(w, "t.npy", np.zeros((4, 3), int)),
                                             "--threshold", "nan"], "--threshold"),
    Case("entropy-missing-file", lambda w: ["analyze", "entropy", w.root / "missing.npy"], "missing.npy"),
    Case("entropy-float-tokens", lambda w: ["analyze", "entropy", _entropy_file(w, "f.npy", np.full((4, 3), 0.5))],
         "f.npy"),
    Case("entropy-negative-tokens", lambda w: ["analyze", "entropy",
                                               _entropy_file(w, "neg.npy", -np.ones((4, 3), int))], "neg.npy"),
    Case("entropy-one-dimensional", lambda w: ["analyze", "entropy", _entropy_file(w, "v.npy", np.arange(5))],
         "v.npy"),
    Case("entropy-codebook-too-small", lambda w: ["analyze", "entropy",
                                                  _entropy_file(w, "k.npy", np.arange(12).reshape(4, 3)),
                                                  "--codebook-size", "4"], "--codebook-size"),
    Case("entropy-pickle-payload", lambda w: ["analyze", "entropy", _pickle_tokens(w)], "tokens.npy"),
    Case("entropy-text-file", lambda w: ["analyze", "entropy", _write(w, "t.pt", "not tensors")], "t.pt"),
    # names
    Case("train-unknown-preset", lambda w: ["train", "vq-nope", "--run-dir", w.root / "r"], "vq-nope"),
    Case("params-unknown-preset", lambda w: ["params", "ar-nope"], "ar-nope"),
    Case("params-memory-gpus-zero", lambda w: ["params", "ar-l", "--memory", "--gpus", "0"], "--gpus"),
    Case("params-memory-gpus-word", lambda w: ["params", "ar-l", "--memory", "--gpus", "8,many"], "--gpus"),
    Case("train-parallel-unknown", lambda w: _train(w, "--set", "parallel=zero3"), "parallel"),
    Case("train-activation-checkpointing-word", lambda w: _train(w, "--set", "activation_checkpointing=maybe"),
         "activation_checkpointing"),
    Case("consolidate-single-file-checkpoint", lambda w: ["consolidate", w.tokenizer_run, "--out", w.root / "c"],
         "single-file"),
    Case("consolidate-out-exists", lambda w: ["consolidate", w.tokenizer_run, "--out", w.results], "--out"),
    Case("consolidate-no-checkpoint", lambda w: ["consolidate", w.root / "nothing", "--out", w.root / "c"],
         "no checkpoint"),
    Case("run-unknown-suite", lambda w: ["run", "nope-suite", "--out", w.root / "o"], "nope-suite"),
    Case("list-unknown-kind", lambda w: ["list", "quantizers"], "quantizers"),
    Case("unknown-command", lambda w: ["trian", "vq-tiny"], "trian"),
    Case("eval-unknown-dataset", lambda w: _eval(w, "--dataset", "imagenet-99"), "imagenet-99"),
    Case("eval-unknown-split", lambda w: _eval(w, "--split", "holdout"), "holdout"),
    Case("eval-unknown-metric", lambda w: _eval(w, "--metrics", "psnr,fidelity"), "fidelity"),
    Case("eval-missing-checkpoint", lambda w: ["eval", w.root / "nowhere", "--results", w.results], "nowhere"),
    Case("train-generator-without-tokenizer", lambda w: ["train", "ar-tiny", "--run-dir", w.root / "g"],
         "--tokenizer"),
    Case("train-tokenizer-with-tokenizer", lambda w: ["train", "vq-tiny", "--run-dir", w.root / "g",
                                                      "--tokenizer", w.tokenizer_run], "--tokenizer"),
    Case("train-generator-on-missing-tokenizer", lambda w: ["train", "ar-tiny", "--run-dir", w.root / "g",
                                                            "--tokenizer", w.root / "no-tok"], "no-tok"),
    Case("train-without-run-dir", lambda w: ["train", "vq-tiny"], "--run-dir"),
    Case("train-imagefolder-without-path", lambda w: _train(w, "--dataset", "imagefolder:"), "imagefolder"),
    Case("eval-imagefolder-missing", lambda w: _eval(w, "--dataset", f"imagefolder:{w.root}/no-images"),
         "no-images"),
    # --set
    Case("set-without-equals", lambda w: _train(w, "--set", "steps"), "steps"),
    Case("set-unknown-setting", lambda w: _train(w, "--set", "stpes=3"), "stpes"),
    Case("set-int-as-word", lambda w: _train(w, "--set", "steps=abc"), "steps"),
    Case("set-negative-size", lambda w: _train(w, "--set", "codebook_size=-16"), "codebook_size"),
    Case("set-nan-float", lambda w: _train(w, "--set", "lr=nan"), "lr"),
    Case("set-impossible-shape", lambda w: _train(w, "--set", "ch_mult=0"), "ch_mult"),
    Case("set-unknown-choice", lambda w: _train(w, "--set", "precision=fp8"), "precision"),
    Case("set-bool-as-word", lambda w: _train(w, "--set", "l2_norm=maybe"), "l2_norm"),
    Case("params-negative-width", lambda w: ["params", "ar-l", "--set", "width=-8"], "width"),
    Case("params-heads-zero", lambda w: ["params", "ar-l", "--set", "heads=0"], "heads"),
    Case("params-width-not-divisible", lambda w: ["params", "ar-l", "--set", "heads=7"], "heads"),
    # devices and the file system
    Case("train-device-cuda-absent", lambda w: _train(w, "--device", "cuda"), "--device"),
    Case("train-device-unknown", lambda w: _train(w, "--device", "tpu"), "--device"),
    Case("eval-device-index", lambda w: _eval(w, "--device", "cuda:7"), "--device"),
    Case("train-run-dir-under-a-file", lambda w: _train_under_file(w), "blocker"),
    Case("train-run-dir-unwritable", lambda w: ["train", "vq-tiny", "--run-dir", UNWRITABLE, "--dataset",
                                                "procedural", "--quiet"], "vqbench-cannot-write-here"),
    Case("eval-results-under-a-file", lambda w: ["eval", w.tokenizer_run, "--results", _file(w) / "r.jsonl",
                                                 "--n-eval", "8", "--quiet"], "blocker"),
    Case("eval-results-unwritable", lambda w: ["eval", w.tokenizer_run, "--results", UNWRITABLE + "/r.jsonl",
                                               "--n-eval", "8", "--quiet"], "vqbench-cannot-write-here"),
    Case("geneval-missing-folder", lambda w: ["eval", "geneval", w.root / "no-samples"], "no-samples"),
    Case("geneval-seed-negative", lambda w: ["eval", "geneval", w.root, "--seed", "-2"], "--seed"),
    Case("geneval-device-unknown", lambda w: ["eval", "geneval", w.root, "--device", "gpu9"], "gpu9"),
    Case("geneval-prompts-per-task-zero", lambda w: ["geneval-prompts", "--out", w.root / "p", "--per-task", "0"],
         "--per-task"),
]


def _write(w, name: str, text: str):
    path = w.root / name
    path.write_text(text)
    return path


def _file(w):
    blocker = w.root / "blocker"
    blocker.write_text("a file where a folder is expected")
    return blocker


def _train_under_file(w):
    return ["train", "vq-tiny", "--run-dir", _file(w) / "run", "--dataset", "procedural", "--quiet"]
