"""The static leaderboard site (issue #14 item 4): tracks, reported beside reproduced, escaping, refusal of a
bad results file with the old site intact. The browser test (tests/test_leaderboard_browser.py) drives it."""
import json

import pytest

from harness.core.errors import VQBenchError
from harness.core.registry import TRACKS
from harness.core.results import ResultsStore, make_rows
from harness.leaderboard.pareto import pareto_front
from harness.leaderboard.site import build_site, entry_id
from harness.leaderboard.tracks import Track
from harness.reporting.published import load_published

EVIL = '<script>alert("x")</script>&'


def _run(run_id, preset, kind="tokenizer", dataset="fashion-mnist", resolution=28, **info):
    return {"run_id": run_id, "kind": kind, "model": preset.split("-")[0], "preset": preset, "config_hash": "h",
            "dataset": dataset, "split": "test", "resolution": resolution, "seed": 0, "started_at": "t0"}


def write_results(path, runs):
    """runs: (run_id, preset, kind, {metric: value}, run_info); a psnr stderr and a rkid_std where given."""
    store = ResultsStore(path)
    for run_id, preset, kind, values, info in runs:
        for m, v in values.items():
            store.append(make_rows(_run(run_id, preset, kind), {m: v}, {m: not m.endswith(("fid", "kid", "kid_std"))},
                                   "torch-fidelity" if "fid" in m or "kid" in m else "canonical", n_images=150,
                                   extra={"run_info": info} | ({"stderr": 0.05} if m == "psnr" else {})))
    return path


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path / "results.jsonl", [
        ("default/vq-fmnist", "vq-fmnist", "tokenizer", {"psnr": 17.8, "rfid": 170.0, "rkid": 0.09, "rkid_std": 0.0},
         {"bits_per_image": 490, "tokens": 49}),
        ("default/cvq-fmnist", "cvq-fmnist", "tokenizer", {"psnr": 17.0, "rfid": 180.0}, {"bits_per_image": 490, "tokens": 49}),
        (f"default/{EVIL}", "fsq-fmnist", "tokenizer", {"psnr": 18.2, "rfid": 165.0}, {"bits_per_image": 400, "tokens": 49}),
        ("default/ar@vq", "ar-fmnist", "generator", {"gfid": 160.0, "gkid": 0.1}, {"parameters": 1.1e6}),
        ("other/vq-fmnist", "vq-fmnist", "tokenizer", {"psnr": 10.0}, {}),        # another suite: no track
    ])


def test_site_has_track_entry_pages_escaped_names_and_figures(results, tmp_path):
    import numpy as np
    (tmp_path / "samples").mkdir()
    np.savez(tmp_path / "samples" / "ar@vq.npz", arr_0=np.zeros((40, 28, 28, 3), dtype=np.uint8))
    index = build_site([results], tmp_path / "site")
    site = index.parent
    text = index.read_text()
    assert "fmnist-49tok" in text and "imagenet256-256tok" in text and "1 result rows belong to no track" in text
    track = (site / "track-fmnist-49tok.html").read_text()
    assert EVIL not in track and html_escaped(EVIL) in track                  # the name shows as written
    assert 'data-dir="up"' in track and "psnr ↑" in track and "rfid ↓" in track
    assert '<span class="badge">torch-fidelity</span>' in track and "protocol torch-fidelity:" in track
    assert "17.80 <span class=\"pm\">± 0.050</span>" in track and "other/vq-fmnist" not in track
    assert 'class="best" data-value="18.2"' in track                          # best psnr of the track
    for run in ("default/vq-fmnist", "default/ar@vq", f"default/{EVIL}"):
        assert (site / f"entry-{entry_id(run)}.html").is_file()
    entry = (site / f"entry-{entry_id('default/vq-fmnist')}.html").read_text()
    assert "config hash" in entry and "git commit" in entry and "not found beside the results file" in entry
    assert "No images: the run folder" in entry                                  # no runs/ beside the results
    samples = (site / f"entry-{entry_id('default/ar@vq')}.html").read_text()
    assert "samples.png" in samples and (site / "figures" / entry_id("default/ar@vq") / "samples.png").is_file()
    assert (site / "figures" / "fmnist-49tok-rfid-vs-bits.png").is_file()
    assert (site / "figures" / "fmnist-49tok-rfid-vs-bits.pdf").is_file()
    assert (site / "assets" / "leaderboard.js").is_file() and "http" not in (site / "assets" / "leaderboard.js").read_text()
    assert not list(tmp_path.glob(".site.*"))                                  # no temporary folder left


def html_escaped(text):
    import html
    return html.escape(text, quote=True)


def test_published_numbers_go_on_their_setting_and_pair_with_a_reproduced_entry(tmp_path):
    """ImageNet 256 / 256 tokens: the papers' numbers; a vq-f16-imagenet run sits beside LlamaGen's reported
    numbers (FQGAN Table 1: rFID 2.19, PSNR 20.79) with reproduced - reported."""
    track = TRACKS.get("imagenet256-256tok")
    records = [r for r in load_published() if track.takes_published(r)]
    assert records and all(r.dataset == "imagenet" and r.resolution == 256 for r in records)
    assert {r.tokens for r in records} <= {256, None}
    results = tmp_path / "results.jsonl"
    store = ResultsStore(results)
    store.append(make_rows(_run("mine/llamagen-vq16", "vq-f16-imagenet", dataset="imagenet", resolution=256),
                           {"psnr": 20.5, "rfid": 2.5}, {"psnr": True, "rfid": False},
                           {"psnr": "canonical", "rfid": "adm"}, n_images=50000))
    try:
        TRACKS.add("test-imagenet", Track(name="test-imagenet", description="test", dataset="imagenet", resolution=256,
                                          tokens=256, training="-", protocol="adm", suite="mine",
                                          published_untokenized=True,
                                          reported_as={"vq-f16-imagenet": ("fqgan", "LlamaGen")}),
                   description="test")
        site = build_site([results], tmp_path / "site").parent
    finally:
        TRACKS._entries.pop("test-imagenet", None)
    page = (site / "track-test-imagenet.html").read_text()
    assert "rfid reported" in page and 'data-value="2.19"' in page and 'data-value="20.79"' in page
    assert "+0.31" in page and "-0.29" in page                              # rFID 2.5 - 2.19, PSNR 20.5 - 20.79
    assert "FQGAN-Dual" in (site / "track-imagenet256-256tok.html").read_text()


def test_a_bad_results_file_is_refused_and_the_old_site_stays(results, tmp_path):
    site = build_site([results], tmp_path / "site").parent
    before = (site / "index.html").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"run_id": "x"}) + "\n")
    with pytest.raises(VQBenchError) as e:
        build_site([results, bad], tmp_path / "site")
    assert "bad.jsonl" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VQBenchError, match="does not exist"):
        build_site([tmp_path / "missing.jsonl"], tmp_path / "site")
    assert (site / "index.html").read_text() == before
    assert not list(tmp_path.glob(".site.*"))


def test_leaderboard_command_line(results, tmp_path, capsys):
    from harness.cli import main
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "site")]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["leaderboard", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "site2")]) == 2
    assert not (tmp_path / "site2").exists()


def test_pareto_front():
    points = {"a": (1.0, 10.0), "b": (2.0, 12.0), "c": (2.0, 9.0), "d": (3.0, 12.0)}
    assert pareto_front(points, higher_is_better=True) == ["a", "b"]
    assert pareto_front(points, higher_is_better=False) == ["a", "c"]      # c: dearer but better


def test_out_must_be_a_site_folder_never_a_suite_folder(results, tmp_path):
    """The site replaces --out whole: a folder with other files (a suite folder) or one holding the results is
    refused before anything moves."""
    suite = tmp_path / "suite"
    (suite / "runs").mkdir(parents=True)
    with pytest.raises(VQBenchError, match="not a leaderboard site"):
        build_site([results], suite)
    assert (suite / "runs").is_dir() and results.is_file()
    inside = tmp_path / "fresh"
    inside.mkdir()
    moved = inside / "results.jsonl"
    moved.write_bytes(results.read_bytes())
    with pytest.raises(VQBenchError, match="contains the results file"):
        build_site([moved], inside)
    build_site([results], tmp_path / "site")
    build_site([results], tmp_path / "site")                       # its own site: replaced


def test_a_run_in_two_results_files_is_refused(results, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_bytes(results.read_bytes())
    with pytest.raises(VQBenchError, match="is in both"):
        build_site([results, other], tmp_path / "site")
