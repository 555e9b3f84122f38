"""Published numbers as data (issue #14 item 1): baselines/published.jsonl is complete, every protocol it
names exists, the models the issue lists are there, and anchor numbers read back as printed."""
import json

import pytest

from bad_input_cases import run_main
from harness.core.errors import VQBenchError
from harness.reporting.published import (METRIC_DIRECTIONS, PAPERS, PUBLISHED_FILE, known_protocols,
                                         load_published, select)


@pytest.fixture(scope="module")
def records():
    return load_published()


def test_every_record_is_complete_and_names_a_known_protocol(records):
    protocols = known_protocols()
    assert len(records) >= 400
    assert {r.paper for r in records} == set(PAPERS)
    for r in records:                               # load_published checked each line; the set of names too
        assert r.protocol in protocols and r.metric in METRIC_DIRECTIONS and r.model.strip() and r.table.strip()
    # one number per (paper, table, model, setting, metric): a duplicate would be a copying error
    keys = [(r.paper, r.table, r.model, r.dataset, r.resolution, r.tokens, r.codebook, r.parameters, r.metric,
             r.cfg, r.note) for r in records]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("model", ["LlamaGen", "FQGAN-Dual", "FQGAN-Triple", "FAR-Base", "FAR-Large", "VCQ",
                                   "CVQ", "CAR", "TiTok", "Open-MAGVIT2"])
def test_the_issues_models_are_there(records, model):
    assert select(records, model=model), model


def test_anchor_numbers_read_back_as_printed(records):
    # LlamaGen VQ-16 (downsampling 16, 8-dim codes, K = 16384) as FQGAN's Table 1 lists it: rFID 2.19, PSNR 20.79
    vq16 = [r for r in select(records, paper="fqgan", model="LlamaGen") if "downsample ratio 16" in r.note]
    assert {(r.metric, r.value) for r in vq16 if r.table == "Table 1"} >= {("rfid", 2.19), ("psnr", 20.79)}
    assert all(r.protocol == "as-published:fqgan" for r in vq16)
    assert select(records, metric="gfid")[0].higher_is_better is False
    assert select(records, metric="psnr")[0].higher_is_better is True


def _bad(tmp_path, obj) -> str:
    path = tmp_path / "published.jsonl"
    good = PUBLISHED_FILE.read_text().splitlines()[0]
    path.write_text(good + "\n" + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    with pytest.raises(VQBenchError) as e:
        load_published(path)
    assert f"{path}:2" in str(e.value)
    return str(e.value)


def test_a_bad_record_is_refused_naming_the_line(tmp_path):
    good = json.loads(PUBLISHED_FILE.read_text().splitlines()[0])
    assert "not valid JSON" in _bad(tmp_path, "{model: x}")
    assert "missing value" in _bad(tmp_path, {k: v for k, v in good.items() if k != "value"})
    assert "unknown keys colour" in _bad(tmp_path, good | {"colour": "red"})
    assert "value is '2.19'" in _bad(tmp_path, good | {"value": "2.19"})
    assert "protocol 'adm-ish'" in _bad(tmp_path, good | {"protocol": "adm-ish"})
    assert "metric must be one of" in _bad(tmp_path, good | {"metric": "fid"})
    assert "paper must be one of" in _bad(tmp_path, good | {"paper": "llamagen"})


def test_published_command_lists_and_filters(tmp_path):
    rc, out, err = run_main(["published", "--paper", "fqgan", "--model", "LlamaGen", "--metric", "rfid"])
    assert rc == 0 and "2.19" in out and out.strip().endswith("published numbers")
    rc, _, err = run_main(["published", "--metric", "fid"])
    assert rc == 2 and err.startswith("error: --metric 'fid'")
    rc, _, err = run_main(["published", "--file", tmp_path / "absent.jsonl"])
    assert rc == 2 and "absent.jsonl" in err
