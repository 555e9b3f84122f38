"""Text-to-image: text-conditioned training on captioned data (AR, CAR, masked), sampling from prompts,
CAR's two-stage recipe on a local causal LM, and GenEval from prompts to scores.

Stated before running:
- Training on a captioned dataset builds a text-conditioned generator (its checkpoint records the
  encoder and width); each step's condition is the embedding of one of the image's own captions, the
  same for the same (seed, step).
- The caption embeddings are cached once per (dataset, n, encoder) and embedded again when the
  captions change.
- CAR's stage I leaves the pretrained backbone exactly as loaded and trains at ``stage1_lr``; stage II
  changes the backbone and trains at ``lr``.
- Per-token conditions are each caption's token states, zero-padded to the longest caption's length.
- Each family (AR, CAR, masked), conditioned on real prompt embeddings (pooled or per token), learns one
  token sequence per prompt and samples each back greedily from its own prompt.
- `vqbench geneval generate` writes GenEval's layout (4 images per prompt), a rerun keeps complete
  folders, and `vqbench eval geneval` scores them (test-double judge: all accuracies 0, 4 images each).
"""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.core import checkpoint as ckpt
from harness.core.contracts import Conditioning, SamplerConfig, TokenLayout
from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.core.registry import GENERATORS
from harness.core.results import ResultsStore
from harness.data.captions import fashion_mnist_captions_of
from harness.data.datasets import open_dataset
from harness.models.checkpoints import run_conditioning
from harness.models.text_encoders import build_text_encoder, condition_embeddings
from harness.training import text_conditions as tc
from harness.training.train_generator import train_generator
from harness.training.train_tokenizer import train_tokenizer

DATA = "fashion-mnist-captions"
N = 48
TOKENIZER = ["steps=2", "batch_size=8", "perceptual_weight=0", "disc_weight=0", "ckpt_every=2"]
GENERATOR = ["steps=3", "batch_size=8", "ckpt_every=3"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    for preset in ("vq-tiny", "cvq-tiny"):
        train_tokenizer(preset, root / preset, overrides=TOKENIZER, dataset=DATA, n_train=N, progress=False)
    return root


@pytest.fixture(scope="module")
def encoder():
    return build_text_encoder("minilm-l6")


def test_each_step_conditions_on_one_of_the_images_own_captions(tmp_path, encoder):
    cache = tmp_path / "text.safetensors"
    conditions = tc.caption_conditions(DATA, N, "minilm-l6", "pooled", cache, Dist())
    labels = open_dataset(DATA, "train", n=N).labels
    assert conditions.embeddings.shape[1] == 384 and conditions.conditioning.kind == "text"
    assert len(conditions.offsets) == N + 1 and int(conditions.offsets[-1]) == 4 * N
    images = torch.arange(N)
    picked = conditions.pick(images, seed=0, step=5)
    assert torch.equal(picked, conditions.pick(images, seed=0, step=5))        # a pure function of (seed, step)
    assert not torch.equal(picked, conditions.pick(images, seed=0, step=6))
    for i in (0, 7, N - 1):
        own = encoder.encode(list(fashion_mnist_captions_of(int(labels[i]))))
        assert (own - picked[i]).abs().amax(-1).min() < 1e-4, i        # one of its own captions
    # reused while the captions are the same; embedded again for another encoder name
    stamp = cache.stat().st_mtime_ns
    again = tc.caption_conditions(DATA, N, "minilm-l6", "pooled", cache, Dist())
    assert torch.equal(again.embeddings, conditions.embeddings) and cache.stat().st_mtime_ns == stamp
    digest = tc.captions_hash(open_dataset(DATA, "train", n=N).captions(range(N)))
    assert tc._read(cache, "minilm-l6", "pooled", digest) is not None
    assert tc._read(cache, "minilm-l6", "pooled", "another-captions-hash") is None
    assert tc._read(cache, "minilm-l6", "tokens", digest) is None
    fewer = tc.caption_conditions(DATA, N - 8, "minilm-l6", "pooled", cache, Dist())   # other captions, same file
    assert len(fewer.offsets) == N - 8 + 1 and cache.stat().st_mtime_ns != stamp
    with pytest.raises(VQBenchError, match="delete the token cache"):
        tc.check_covers(fewer, N, tmp_path / "tokens.safetensors", DATA)


def test_token_states_are_zero_padded_to_the_longest_caption(encoder):
    texts = ["a bag", "a black-and-white picture of a pair of trousers"]
    states, mask = encoder.encode_tokens(texts)
    lengths = mask.sum(1).tolist()
    out = condition_embeddings(encoder, texts, None)
    assert out.shape == (2, max(lengths), 384)
    assert torch.allclose(out[1], states[1], atol=1e-5)
    assert torch.allclose(out[0, :lengths[0]], states[0, :lengths[0]], atol=1e-5) and not out[0, lengths[0]:].any()
    assert condition_embeddings(encoder, texts, 4).shape == (2, 4, 384)          # a trained L truncates
    assert torch.allclose(condition_embeddings(encoder, texts, 0), encoder.encode(texts), atol=1e-6)


@pytest.mark.parametrize("preset,tokenizer", [("ar-tiny", "vq-tiny"), ("masked-tiny", "vq-tiny"),
                                              ("car-tiny", "cvq-tiny")])
def test_training_on_captions_builds_a_text_conditioned_generator(preset, tokenizer, tokenizers, tmp_path, capsys):
    run = tmp_path / preset
    train_generator(preset, tokenizers / tokenizer, run, overrides=GENERATOR, dataset=DATA, n_train=N,
                    progress=False)
    state = ckpt.load_state(ckpt.resolve(run))
    assert state["conditioning"] == {"kind": "text", "num_classes": 0, "text_dim": 384, "text_encoder": "minilm-l6",
                                     "text_tokens": 0}
    assert run_conditioning(state).text_dim == 384
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a sandal\n\na photo of a bag\n")
    assert main(["sample", str(run), "--prompts", str(prompts), "--n", "3", "--out", str(tmp_path / "s.npz"),
                 "--cfg-scale", "2", "--device", "cpu"]) == 0
    saved = np.load(tmp_path / "s.npz")
    assert saved["arr_0"].shape == (3, 16, 16, 3) and saved["arr_1"].tolist() == [-1, -1, -1]
    assert saved["prompts"].tolist() == ["a photo of a sandal", "a photo of a bag", "a photo of a sandal"]


def test_per_token_text_states_as_the_condition(tokenizers, tmp_path):
    run = tmp_path / "tokens"
    train_generator("car-tiny", tokenizers / "cvq-tiny", run, overrides=GENERATOR + ["text_condition=tokens"],
                    dataset=DATA, n_train=N, progress=False)
    record = ckpt.load_state(ckpt.resolve(run))["conditioning"]
    encoder = build_text_encoder("minilm-l6")
    longest = max(int(encoder.encode_tokens([c])[1].sum()) for label in range(10)
                  for c in fashion_mnist_captions_of(label))
    assert record["text_tokens"] == longest and record["text_dim"] == 384
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a bag\n" + "a very long prompt " * 10 + "\n")      # shorter and longer than trained
    assert main(["sample", str(run), "--prompts", str(prompts), "--out", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (2, 16, 16, 3)


def test_prompts_are_refused_by_a_class_conditional_generator(tokenizers, tmp_path, capsys):
    run = tmp_path / "class"
    train_generator("ar-tiny", tokenizers / "vq-tiny", run, overrides=GENERATOR, dataset="fashion-mnist", n_train=N,
                    progress=False)
    assert run_conditioning(ckpt.load_state(ckpt.resolve(run))).kind == "class"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a sandal\n")
    assert main(["sample", str(run), "--prompts", str(prompts), "--out", str(tmp_path / "s.npz")]) == 2
    assert "class-conditional" in capsys.readouterr().err and not (tmp_path / "s.npz").exists()
    assert main(["geneval", "generate", str(run), "--out", str(tmp_path / "g")]) == 2
    assert "captioned dataset" in capsys.readouterr().err


def _tiny_causal_lm(folder):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=50, max_position_embeddings=128)).save_pretrained(folder)
    return {k: v.clone() for k, v in load_file(folder / "model.safetensors").items()}


def _lr_log(run) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/lr")}


def test_car_two_stage_recipe_on_a_local_causal_lm(tokenizers, tmp_path):
    lm = _tiny_causal_lm(tmp_path / "lm")
    run = tmp_path / "car"
    train_generator("car-tiny", tokenizers / "cvq-tiny", run, dataset=DATA, n_train=N, progress=False,
                    overrides=[f"backbone=hf:{tmp_path / 'lm'}", "stage1_steps=2", "stage1_lr=1e-2", "lr=1e-3",
                               "lr_schedule=constant", "steps=3", "batch_size=8", "ckpt_every=1", "log_every=1"])

    def weights(step):
        return ckpt.load(run / "checkpoints" / f"step_{step:08d}")[0]

    def backbone(w):   # the decoder's tensors, named as in the LM's file
        return {"model." + k[len("model.backbone.decoder."):]: v for k, v in w.items()
                if k.startswith("model.backbone.decoder.")}

    start = {k: v for k, v in lm.items() if k.startswith("model.")}
    after_1, after_2 = backbone(weights(2)), backbone(weights(3))     # the ends of stage I and of stage II
    assert after_1.keys() == start.keys()
    assert all(torch.equal(after_1[k], start[k]) for k in start), "stage I moved the frozen backbone"
    assert any(not torch.equal(after_2[k], start[k]) for k in start), "stage II left the backbone untouched"
    assert _lr_log(run) == pytest.approx({1: 1e-2, 2: 1e-2, 3: 1e-3})


def test_geneval_generate_then_eval_is_one_chain(tokenizers, tmp_path, capsys):
    run = tmp_path / "ar"
    train_generator("ar-tiny", tokenizers / "vq-tiny", run, overrides=GENERATOR, dataset=DATA, n_train=N,
                    progress=False)
    assert main(["geneval-prompts", "--out", str(tmp_path / "prompts")]) == 0
    records = (tmp_path / "prompts" / "evaluation_metadata.jsonl").read_text().splitlines()
    subset = tmp_path / "subset.jsonl"
    subset.write_text("\n".join(records[:2] + records[-1:]) + "\n")      # single-object and colour-attribute
    samples = tmp_path / "samples"
    argv = ["geneval", "generate", str(run), "--out", str(samples), "--metadata", str(subset), "--cfg-scale", "2",
            "--prompts-per-batch", "2", "--device", "cpu"]
    assert main(argv) == 0
    assert "3 prompt folders written" in capsys.readouterr().out
    folders = sorted(p.name for p in samples.iterdir() if p.is_dir())
    assert folders == ["00000", "00001", "00002"]
    for k, line in zip(folders, records[:2] + records[-1:]):
        assert json.loads((samples / k / "metadata.jsonl").read_text()) == json.loads(line)
        assert sorted(p.name for p in (samples / k / "samples").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    # a rerun after losing one image rewrites only that prompt, with the same pixels as before
    lost = samples / "00002" / "samples" / "0001.png"
    before = lost.read_bytes()
    kept = (samples / "00000" / "samples" / "0000.png").stat().st_mtime_ns
    lost.unlink()
    assert main(argv) == 0
    assert "1 prompt folders written" in capsys.readouterr().out and lost.read_bytes() == before
    assert (samples / "00000" / "samples" / "0000.png").stat().st_mtime_ns == kept
    # the folder is this generator's at these settings: another scale would mix two sets of images
    assert main(argv[:-4] + ["--cfg-scale", "3", "--prompts-per-batch", "2", "--device", "cpu"]) == 2
    assert "generated with other settings (sampler" in capsys.readouterr().err
    (samples / "00001" / "metadata.jsonl").write_bytes(b"\xff not json")      # damaged: written again
    assert main(argv) == 0 and "1 prompt folders written" in capsys.readouterr().out
    store = tmp_path / "results.jsonl"
    assert main(["eval", "geneval", str(samples), "--detector", "nothing-detected-double", "--clip", "palette-double",
                 "--results", str(store), "--quiet"]) == 0
    rows = {r["metric"]: r for r in ResultsStore(store).records()}
    made = json.loads((samples / "generation.json").read_text())
    assert rows["geneval"]["model"] == rows["geneval"]["preset"] == "ar-tiny" and rows["geneval"]["seed"] == 0
    assert rows["geneval"]["config_hash"] == made["config_hash"] and made["sampler"]["cfg_scale"] == 2.0
    assert rows["geneval"]["n_images"] == 12 and rows["geneval"]["value"] == 0.0
    assert rows["geneval_single_object"]["n_images"] == 8 and rows["geneval_color_attr"]["n_images"] == 4


@pytest.mark.parametrize("preset", ["ar-tiny", "car-tiny", "masked-tiny", "far-tiny"])
@pytest.mark.parametrize("tokens", [0, None], ids=["pooled", "tokens"])
def test_each_family_learns_one_sequence_per_prompt(preset, tokens, encoder):
    """The prompt, not chance, picks the sequence: three sequences learned from three real prompt
    embeddings come back by greedy sampling, each from its own prompt (1 in 16^5 by chance)."""
    prompts = ["a photo of a sandal", "a photo of a bag", "a small grayscale image of a dress"]
    cond = condition_embeddings(encoder, prompts, tokens)
    if preset == "far-tiny":       # two sub-codes of 16 per position (FQGAN-Dual's layout, 5 positions)
        layout = TokenLayout.constant(5, 16, num_factors=2, grid=(1, 5))
    else:
        layout = TokenLayout.constant(5, 16, position_kind="channel" if preset == "car-tiny" else "spatial",
                                      **({} if preset == "car-tiny" else {"grid": (1, 5)}))
    torch.manual_seed(0)
    cfg = dataclasses.replace(GENERATORS.get(preset)(), class_dropout=0.0)
    model = cfg.build(layout, Conditioning("text", text_dim=384),
                      **({"codebook": torch.randn(16, 8)} if preset == "car-tiny" else {}))
    shape = (3, 5, 2) if preset == "far-tiny" else (3, 5)
    targets = torch.randint(0, 16, shape, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        opt.zero_grad()
        model.loss(targets, cond).backward()
        opt.step()
    model.eval()
    greedy = model.sample(3, cond, sampler=SamplerConfig(temperature=0.0))
    assert torch.equal(greedy, targets)


def test_prompt_accuracy_of_real_images_is_the_classifiers_test_accuracy():
    """Stated: fed the test images themselves with their true labels, prompt accuracy equals the judge's
    own test accuracy, which is far above chance; samples of prompts with no class give NaN and a reason."""
    from harness.core.contracts import EvalBatch
    from harness.evaluation.classifier import prompt_classifier
    from harness.evaluation.pipeline import build_metrics
    judge = prompt_classifier("fashion-mnist", 28, 1, n_train=2000, epochs=1, n_test=500, cache=False)
    assert judge.test_accuracy > 0.5                                           # chance: 0.1
    test = open_dataset("fashion-mnist", "test", resolution=28, channels=1, n=500)
    metric, = build_metrics(["prompt_accuracy"])
    metric.classifier = judge
    for start in (0, 200):                                                     # two batches stream into one value
        images, labels = test.batch(torch.arange(start, start + 200 if start == 0 else 500))
        metric.update(EvalBatch(samples=images, labels=labels))
    assert metric.compute()["prompt_accuracy"] == pytest.approx(judge.test_accuracy, abs=1e-12)
    assert "test accuracy" in metric.feature_extractor
    unknown, = build_metrics(["prompt_accuracy"])
    unknown.classifier = judge
    unknown.update(EvalBatch(samples=images, labels=torch.full((len(images),), -1)))
    value = unknown.compute()["prompt_accuracy"]
    assert value != value and unknown.reasons["prompt_accuracy"]
