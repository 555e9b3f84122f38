"""GenEval: the prompt set, the scoring rules on synthetic scenes of known truth, the CLI, and the
loading paths of the real judges (random weights written here stand in for the user's files)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.cli import build_parser, main
from harness.core.errors import MissingWeightsError, VQBenchError
from harness.evaluation.geneval.backends import (COLOR_TEMPLATES, Detection, GroundTruthSceneBackend,
                                      PaletteColorDouble, build_color_classifier, build_detector)
from harness.evaluation.geneval.prompts import (COCO_CLASSES, COLORS, GENEVAL_PROMPT_COUNTS, TASKS, generate_metadata,
                                     prompt_set_id, read_metadata, task_counts, write_metadata)
from harness.evaluation.geneval.scenes import write_synthetic_samples
from harness.evaluation.geneval.scoring import (ScoringRules, evaluate_samples, judge, keep_detections, object_crop,
                                     relative_position, summarize)
from harness.core.results import ResultsStore


# ---------------------------------------------------------------- prompts
def test_default_prompts_are_genevals_published_set():
    records = generate_metadata()
    assert task_counts(records) == GENEVAL_PROMPT_COUNTS and len(records) == 553
    prompts = [r["prompt"] for r in records]
    # lines of GenEval's prompts/evaluation_metadata.jsonl (its first prompt of each task, and more)
    assert prompts[:4] == ["a photo of a bench", "a photo of a cow", "a photo of a bicycle", "a photo of a clock"]
    firsts = {t: next(r for r in records if r["tag"] == t) for t in TASKS}
    assert firsts["two_object"]["prompt"] == "a photo of a bench and a sports ball"
    assert firsts["counting"] == {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                                  "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}
    assert firsts["colors"]["prompt"] == "a photo of a blue fire hydrant"
    assert firsts["position"] == {"tag": "position", "include": [
        {"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}],
        "prompt": "a photo of a dog right of a teddy bear"}
    assert firsts["color_attr"]["prompt"] == "a photo of a purple wine glass and a black apple"
    assert prompts[503] == "a photo of a blue cow and a black computer keyboard"
    assert prompt_set_id(records) == "geneval-553"


def test_prompts_are_deterministic_and_follow_the_templates():
    a, b, c = generate_metadata(7, 20), generate_metadata(7, 20), generate_metadata(8, 20)
    assert a == b and a != c
    assert prompt_set_id(a).startswith("custom-") and prompt_set_id(a) != prompt_set_id(c)
    assert len(COCO_CLASSES) == len(set(COCO_CLASSES)) == 80
    for r in generate_metadata():
        if r["tag"] == "counting":
            n = r["include"][0]["count"]
            assert 2 <= n <= 4 and r["exclude"] == [{"class": r["include"][0]["class"], "count": n + 1}]
        for clause in r["include"]:
            assert clause["class"] in COCO_CLASSES
            if "color" in clause:
                assert clause["class"] != "person" and clause["color"] in COLORS
    assert "a photo of an orange" in [r["prompt"] for r in generate_metadata()]    # "an" before vowels


def test_metadata_files_round_trip_and_bad_lines_are_named(tmp_path):
    records = generate_metadata(1, 5)
    path = write_metadata(tmp_path, records)
    assert read_metadata(path) == records
    assert (tmp_path / "generation_prompts.txt").read_text().splitlines() == [r["prompt"] for r in records]
    path.write_text(path.read_text() + '{"tag": "juggling", "include": [], "prompt": "x"}\n')
    with pytest.raises(VQBenchError, match=rf"evaluation_metadata.jsonl:{len(records) + 1} .*tag must be one of"):
        read_metadata(path)


# ---------------------------------------------------------------- scoring on scenes of known truth
def _picked_prompts():
    records = generate_metadata()
    return [r for t in TASKS for r in [x for x in records if x["tag"] == t][:2]]   # 2 prompts per task


# (prompt, image) -> defect; prompts 0-1 single object, 2-3 two objects, 4-5 counting, 6-7 colours,
# 8-9 position, 10-11 colour attribution; 4 images each, so 8 images per task
DEFECTS = {(0, 0): "missing", (0, 1): "below_0.3", (1, 0): "presence_at_0.5",
           (2, 0): "missing", (3, 3): "presence_at_0.5",
           (4, 0): "count_low", (4, 1): "count_high", (4, 2): "extra_at_0.5", (5, 0): "one_at_0.5",
           (6, 0): "wrong_color", (7, 1): "wrong_color", (7, 2): "missing",
           (8, 0): "wrong_position", (8, 1): "wrong_position", (9, 0): "missing",
           (10, 0): "swapped_colors", (11, 0): "wrong_color", (11, 3): "missing"}
EXPECTED_ACCURACY = {"single_object": 6 / 8, "two_object": 7 / 8, "counting": 5 / 8, "colors": 5 / 8,
                     "position": 5 / 8, "color_attr": 5 / 8}


@pytest.fixture(scope="module")
def synthetic_samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("geneval_samples")
    expected = write_synthetic_samples(root, _picked_prompts(), DEFECTS)
    return root, expected


def test_scorer_reaches_the_known_verdict_of_every_synthetic_image(synthetic_samples):
    root, expected = synthetic_samples
    results = evaluate_samples(root, GroundTruthSceneBackend(), PaletteColorDouble())
    assert [(r["tag"], r["correct"]) for r in results] == [(e["tag"], e["correct"]) for e in expected]
    summary = summarize(results)
    assert summary.task_accuracy == EXPECTED_ACCURACY
    assert summary.overall == pytest.approx(sum(EXPECTED_ACCURACY.values()) / 6, abs=1e-12)
    assert summary.n_images == 48 and summary.n_prompts == 12 and summary.images_per_prompt == {4: 12}
    reasons = {(e["prompt"], e["image"]): r["reason"] for e, r in zip(expected, results)}
    assert reasons[(4, 1)].startswith("expected") and "<" in reasons[(4, 1)]          # the exclude clause
    assert "right of target, found left of" in reasons[(8, 0)]
    assert reasons[(6, 0)].startswith(f"expected {_picked_prompts()[6]['include'][0]['color']}")
    assert reasons[(1, 0)] == "" and reasons[(4, 2)] == ""


def _det(label, score, box=(0, 0, 10, 10), mask=None):
    return Detection(label, score, tuple(float(v) for v in box), mask)


def test_confidence_thresholds_presence_and_counting():
    rules = ScoringRules()
    dets = [_det("cat", 0.95, (0, 0, 10, 10)), _det("cat", 0.95, (20, 0, 30, 10)), _det("cat", 0.5, (40, 0, 50, 10)),
            _det("dog", 0.3, (60, 0, 70, 10))]
    kept = keep_detections(dets, "single_object", rules)
    assert len(kept["cat"]) == 3 and "dog" not in kept                  # 0.5 > 0.3 counts; 0.3 is not above 0.3
    assert len(keep_detections(dets, "counting", rules)["cat"]) == 2     # counting keeps > 0.9 only
    three = {"tag": "counting", "include": [{"class": "cat", "count": 3}], "exclude": [{"class": "cat", "count": 4}],
             "prompt": "a photo of three cats"}
    two = {"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": 3}],
           "prompt": "a photo of two cats"}
    image = Image.new("RGB", (80, 20))
    assert not judge(image, keep_detections(dets, "counting", rules), three, PaletteColorDouble(), rules)[0]
    assert judge(image, keep_detections(dets, "counting", rules), two, PaletteColorDouble(), rules)[0]
    one_cat = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
    assert judge(image, keep_detections(dets[2:3], "single_object", rules), one_cat, PaletteColorDouble(), rules)[0]
    many = [_det("cat", 0.99 - i / 100) for i in range(20)]
    assert len(keep_detections(many, "single_object", rules)["cat"]) == 16     # at most 16 per class
    assert [d.score for d in keep_detections(many[::-1], "single_object", rules)["cat"]][:2] == [0.99, 0.98]


def test_overlap_filter_is_off_by_default_and_greedy_when_set():
    dets = [_det("cat", 0.9, (0, 0, 99, 99)), _det("cat", 0.8, (5, 5, 99, 99)), _det("cat", 0.7, (200, 0, 299, 99))]
    assert len(keep_detections(dets, "single_object", ScoringRules())["cat"]) == 3
    kept = keep_detections(dets, "single_object", ScoringRules(max_overlap=0.5))["cat"]
    assert [d.score for d in kept] == [0.9, 0.7]


def test_relative_position_uses_centres_with_a_margin_of_box_extents():
    ref = (100, 100, 140, 140)                       # 40 x 40; margin 0.1 * (40 + 40) = 8 px per axis
    assert relative_position((92, 100, 132, 140), ref) == set()               # 8 px left: shrinks to 0
    assert relative_position((84, 100, 124, 140), ref) == set()               # 16 px: (16 - 8) / 16 = 0.5, not > 0.5
    assert relative_position((83, 100, 123, 140), ref) == {"left of"}         # 17 px: 9 / 17 > 0.5
    assert relative_position((150, 100, 190, 140), ref) == {"right of"}
    assert relative_position((100, 40, 140, 80), ref) == {"above"}            # y grows downwards
    assert relative_position((100, 160, 140, 200), ref) == {"below"}
    assert relative_position((160, 160, 200, 200), ref) == {"right of", "below"}   # diagonal: both
    assert relative_position((160, 110, 200, 150), ref) == {"right of"}
    assert relative_position((83, 100, 123, 140), ref, margin=0.2) == set()     # 16 px margin: 1 / 17


def test_colour_crops_mask_the_background_grey_and_crop_to_the_box():
    image = Image.new("RGB", (40, 30), (250, 250, 250))
    mask = np.zeros((30, 40), bool)
    mask[10:20, 10:15] = True
    image.paste((220, 20, 20), (10, 10, 15, 20))
    crop = np.asarray(object_crop(image, _det("apple", 0.9, (5, 5, 25, 25), mask)))
    assert crop.shape == (20, 20, 3)
    assert (crop[5:15, 5:10] == (220, 20, 20)).all()
    outside = np.ones((20, 20), bool)
    outside[5:15, 5:10] = False
    assert (crop[outside] == (153, 153, 153)).all()                            # GenEval's #999
    plain = np.asarray(object_crop(image, _det("apple", 0.9, (5, 5, 25, 25))))    # no mask: the box as is
    assert (plain[0, 0] == (250, 250, 250)).all()
    assert PaletteColorDouble().classify([Image.fromarray(crop)], "apple") == ["red"]


# ---------------------------------------------------------------- command line
def test_cli_without_weights_exits_2_naming_what_to_provide(synthetic_samples, tmp_path, monkeypatch, capsys):
    root, _ = synthetic_samples
    monkeypatch.delenv("VQBENCH_GENEVAL_DETECTOR", raising=False)
    monkeypatch.delenv("VQBENCH_GENEVAL_CLIP", raising=False)
    assert main(["eval", "geneval", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: GenEval needs weights you provide")
    assert "--detector maskrcnn:<" in err and "--clip <open_clip arch>:<weights file>" in err
    (tmp_path / "detector.pth").write_bytes(b"")
    assert main(["eval", "geneval", str(root), "--detector", f"maskrcnn:{tmp_path / 'detector.pth'}"]) == 2
    err = capsys.readouterr().err
    assert "--clip" in err and "--detector" not in err                     # only what is missing
    assert main(["eval", "geneval", str(root), "--detector", "maskrcnn:/nope.pth", "--clip", "ViT-L-14:/nope.bin"]) == 2
    err = capsys.readouterr().err
    assert "object detector: /nope.pth not found" in err and "CLIP: /nope.bin not found" in err
    assert main(["eval", "geneval", str(root / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_end_to_end_with_the_test_doubles(synthetic_samples, tmp_path, capsys):
    root, _ = synthetic_samples
    store, out = tmp_path / "results.jsonl", tmp_path / "geneval.jsonl"
    argv = ["eval", "geneval", str(root), "--detector", "ground-truth-double", "--clip", "palette-double",
            "--results", str(store), "--out", str(out), "--run-id", "synthetic", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "overall (mean of 6 task accuracies): 0.68750" in printed
    rows = {r["metric"]: r for r in ResultsStore(store).records()}
    assert rows["geneval"]["value"] == pytest.approx(sum(EXPECTED_ACCURACY.values()) / 6)
    for task, acc in EXPECTED_ACCURACY.items():
        assert rows[f"geneval_{task}"]["value"] == acc and rows[f"geneval_{task}"]["n_images"] == 8
    assert {r["protocol"] for r in rows.values()} == {"geneval"} and rows["geneval"]["n_images"] == 48
    assert {r["kind"] for r in rows.values()} == {"generator"}
    assert rows["geneval"]["feature_extractor"] == "ground-truth-double+palette-double"
    assert rows["geneval"]["split"].startswith("custom-") and rows["geneval"]["resolution"] == 256
    assert len(out.read_text().splitlines()) == 48
    assert main(argv) == 0 and len(ResultsStore(store).records()) == 7          # rerun replaces its rows
    # `vqbench eval CHECKPOINT` is untouched
    args = build_parser().parse_args(["eval", "runs/x", "--results", "r.jsonl"])
    assert args.command == "eval" and args.checkpoint == Path("runs/x")


def test_geneval_prompts_command_writes_the_published_set(tmp_path, capsys):
    assert main(["geneval-prompts", "--out", str(tmp_path)]) == 0
    assert "553 prompts" in capsys.readouterr().out
    assert task_counts(read_metadata(tmp_path / "evaluation_metadata.jsonl")) == GENEVAL_PROMPT_COUNTS


def test_ground_truth_double_refuses_images_without_a_sidecar(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "0000.png")
    with pytest.raises(VQBenchError, match="only reads synthetic scenes"):
        GroundTruthSceneBackend().detect(Image.new("RGB", (8, 8)), tmp_path / "0000.png")


# ---------------------------------------------------------------- real judges: the loading paths
@pytest.fixture(scope="module")
def maskrcnn_file(tmp_path_factory):
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("maskrcnn") / "maskrcnn_random.pth"
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(), path)
    return path


def test_torchvision_maskrcnn_loads_a_user_state_dict(maskrcnn_file, tmp_path):
    detector = build_detector(f"maskrcnn:{maskrcnn_file}", "cpu")
    assert sorted(detector.labels.values()) == sorted(COCO_CLASSES)
    assert detector.labels[1] == "person" and detector.labels[74] == "computer mouse" and detector.labels[90] == "toothbrush"
    assert detector.name == "maskrcnn_resnet50_fpn"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(VQBenchError, match="is not a maskrcnn_resnet50_fpn COCO state dict"):
        build_detector(f"maskrcnn:{tmp_path / 'other.pth'}", "cpu")
    with pytest.raises(VQBenchError, match="unknown GenEval detector 'yolo'"):
        build_detector("yolo:/x.pt")


@pytest.mark.slow
def test_torchvision_maskrcnn_detects_through_the_real_path(maskrcnn_file, synthetic_samples):
    """Random weights: proves shapes and label mapping, not accuracy (about 30 s on a 2-core CPU)."""
    root, _ = synthetic_samples
    detector = build_detector(f"maskrcnn:{maskrcnn_file}", "cpu")
    image = Image.open(root / "00000" / "samples" / "0000.png").convert("RGB")
    dets = detector.detect(image, root / "00000" / "samples" / "0000.png")
    assert dets and all(d.label in COCO_CLASSES and 0 <= d.score <= 1 for d in dets)
    assert all(d.mask.shape == (256, 256) and d.mask.dtype == bool for d in dets)


TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory):
    """A randomly initialized tiny open_clip model saved as a user weights file."""
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("open_clip_cfg")
    (folder / "vqbench-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("vqbench-test-tiny-clip")
    torch.save(model.state_dict(), folder / "tiny_clip.pt")
    return "vqbench-test-tiny-clip", folder / "tiny_clip.pt", model.eval()


def test_open_clip_colour_classifier_matches_a_direct_zero_shot_computation(tiny_clip_file):
    import open_clip
    arch, path, reference = tiny_clip_file
    classifier = build_color_classifier(f"{arch}:{path}", "cpu")
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((20, 30), (40, 10), (32, 32))]
    got = classifier.classify(crops, "fire hydrant")
    # the same classification written out from open_clip's public API
    tokenizer = open_clip.get_tokenizer(arch)
    _, _, preprocess = open_clip.create_model_and_transforms(arch)
    with torch.no_grad():
        weights = []
        for c in COLORS:
            t = torch.nn.functional.normalize(reference.encode_text(tokenizer(
                [tpl.format(c=c, o="fire hydrant") for tpl in COLOR_TEMPLATES])), dim=-1).mean(0)
            weights.append(t / t.norm())
        f = torch.nn.functional.normalize(reference.encode_image(torch.stack([preprocess(c) for c in crops])), dim=-1)
        expected = [COLORS[i] for i in (f @ torch.stack(weights).T).argmax(1).tolist()]
    assert got == expected and len(got) == 3
    assert classifier.color_embeddings("fire hydrant").shape == (10, 32)
    with pytest.raises(MissingWeightsError, match="CLIP weights: /nope.bin not found"):
        build_color_classifier(f"{arch}:/nope.bin")
