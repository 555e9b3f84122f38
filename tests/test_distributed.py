"""torchrun --nproc_per_node 2 on CPU (gloo): training runs, and evaluation equals one process."""
import json

import pytest

from conftest import run_cli, run_torchrun
from harness.suites import TOKENIZER_METRICS


def _values(path, kind="tokenizer", sources=None):
    """metric -> value of the evaluation rows (curves and probes have their own tests)."""
    rows = [json.loads(line) for line in open(path)]
    rows = [r for r in rows if r["kind"] == kind and "k" not in json.loads(r["extra"])
            and not r["metric"].startswith("probe_")
            and (sources is None or json.loads(r["extra"]).get("metric_source") in sources)]
    return {r["metric"]: r["value"] for r in rows}, rows


def test_ddp_suite_and_evaluation_equal_single_process(tmp_path, cli_env):
    env = cli_env | {"OMP_NUM_THREADS": "1"}
    r = run_torchrun(2, "run", "tiny", "--out", tmp_path / "ddp", "--quiet", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp_values, ddp_rows = _values(tmp_path / "ddp" / "results.jsonl", sources=TOKENIZER_METRICS)
    assert {"psnr", "ssim", "codebook_usage", "unique_ratio"} <= set(ddp_values)
    assert all(json.loads(row["extra"])["world_size"] == 2 for row in ddp_rows)
    state = json.loads(next((tmp_path / "ddp" / "runs").glob("*/checkpoints/step_*/state.json")).read_text())
    assert state["world_size"] == 2

    single = tmp_path / "single.jsonl"
    r = run_cli("eval", tmp_path / "ddp" / "runs" / "vq-tiny", "--results", single, "--n-eval", "64",
                "--batch-size", "32", "--quiet", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    single_values, _ = _values(single)
    assert single_values.keys() == ddp_values.keys()
    for k in ddp_values:
        assert single_values[k] == pytest.approx(ddp_values[k], rel=1e-6, abs=1e-9), k

    # generation: the same samples (batches seeded by index) and features gathered in sample order
    ddp_gen, gen_rows = _values(tmp_path / "ddp" / "results.jsonl", kind="generator")
    assert {"gfid", "gkid", "gfid_nocfg", "gkid_nocfg"} <= set(ddp_gen)
    assert all(json.loads(row["extra"])["world_size"] == 2 for row in gen_rows)
    single_gen = tmp_path / "single_gen.jsonl"
    r = run_cli("eval", tmp_path / "ddp" / "runs" / "ar-tiny@vq-tiny", "--results", single_gen, "--n-samples", "16",
                "--batch-size", "8", "--cfg-scale", "2.0", "--metrics", "gfid,gkid", "--quiet", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    one_gen, _ = _values(single_gen, kind="generator")
    assert one_gen.keys() == ddp_gen.keys()
    for k in ddp_gen:
        assert one_gen[k] == pytest.approx(ddp_gen[k], rel=1e-6, abs=1e-9), k
