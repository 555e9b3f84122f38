"""The claims registry: the declared verdict rule, aggregation over seeds, missing evidence, every
registered claim measured on recorded rows of a real default run, the claims table and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.claims.claim import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Check, Claim, evaluate
from harness.claims.evidence import Estimate, SeedRows, seed_label
from harness.claims.report import claims_frame, write_claims
from harness.claims.runner import SUITES_READ, measure_claims, write_claims_table
from harness.core.errors import VQBenchError
from harness.core.registry import CLAIMS, SUITES
from harness.core.results import ResultsStore

from conftest import run_cli

# rows of the default suite's run of 2026-11-30 (commit 753e947) that the main-job claims read,
# extra reduced to what they use (tests/data/README: how it was cut)
RECORDED = Path(__file__).parent / "data" / "default_run_claim_rows.jsonl"


def _rows(*specs) -> pd.DataFrame:
    """Rows (run label, metric, value, extra) of suite `default`."""
    return pd.DataFrame([{"run_id": f"default/{label}", "metric": metric, "value": value, "split": "test",
                          "n_images": 2000, "extra": json.dumps(extra), "protocol": "canonical",
                          "config_hash": "c0", "finished_at": f"2026-12-01T00:00:{i:02d}"}
                         for i, (label, metric, value, extra) in enumerate(specs)],
                        columns=["run_id", "metric", "value", "split", "n_images", "extra", "protocol",
                                 "config_hash", "finished_at"])


@pytest.mark.parametrize("value,stderr,relation,expected", [
    (1.0, 0.1, ">", HOLDS),            # 1.0 - 0.2 > 0.5
    (0.6, 0.1, ">", INCONCLUSIVE),     # 0.4 < 0.5 < 0.8
    (0.2, 0.1, ">", FAILS),            # 0.4 <= 0.5
    (0.5, None, ">", FAILS),           # no error estimate: on the threshold is not above it
    (0.51, None, ">", HOLDS),
    (0.2, 0.1, "<", HOLDS),
    (0.45, 0.1, "<", INCONCLUSIVE),
    (float("nan"), 0.1, ">", INCONCLUSIVE),
])
def test_verdict_rule(value, stderr, relation, expected):
    assert Check("q", relation, 0.5).verdict(Estimate(value, stderr)) == expected


def test_a_check_needs_a_known_relation():
    with pytest.raises(VQBenchError, match="relation"):
        Check("q", ">=", 0.5)


def _toy_claim(seeds: int) -> Claim:
    return Claim("toy", "a beats b", "nowhere", "-", "psnr of a minus b",
                 lambda rows: {"gain": rows.value("a", "psnr") - rows.value("b", "psnr")},
                 (Check("gain", ">", 0.0),), runs=("a", "b"), seeds=seeds)


def test_seeds_are_averaged_and_their_spread_is_the_error():
    specs = []
    for seed, (a, b) in enumerate([(10.0, 9.0), (10.5, 9.0), (9.9, 9.2)]):
        specs += [(seed_label("a", seed), "psnr", a, {}), (seed_label("b", seed), "psnr", b, {})]
    out = evaluate(_toy_claim(3), _rows(*specs), SUITES_READ)
    gains = [1.0, 1.5, 0.7]
    assert out.per_seed["gain"] == pytest.approx(gains)
    assert out.quantities["gain"].value == pytest.approx(sum(gains) / 3)
    sd = pd.Series(gains).std()
    t_scale = 4.302652729911275 / 2                # t_{0.975, 2} / Z: 2 se is Student's half-width
    assert out.quantities["gain"].stderr == pytest.approx(t_scale * sd / math.sqrt(3))
    assert out.verdict == HOLDS                    # 1.067 - 4.30 * 0.233 = 0.063 > 0


def test_claims_table_reads_as_many_seeds_as_the_folder_holds():
    """After `vqbench run default --seeds 3` the store has <run>.seed1/.seed2 replicas: every claim is then
    tested over 3 seeds (a claim with a replica missing says so and cannot hold)."""
    from harness.claims.runner import seeds_in
    recorded = pd.read_json(RECORDED, lines=True, dtype=False)
    assert seeds_in(recorded) == 1
    replicas = recorded[recorded["run_id"] == recorded["run_id"].iloc[0]].copy()
    replicas["run_id"] = replicas["run_id"] + ".seed2"
    both = pd.concat([recorded, replicas], ignore_index=True)
    assert seeds_in(both) == 3
    outcomes = measure_claims(both)
    assert all(o.claim.seeds >= 3 for o in outcomes)
    measured = [o for o in outcomes if o.note and "of 3 seeds measured" in o.note]
    assert measured and all(o.verdict != HOLDS for o in measured)


def test_one_seed_uses_the_rows_bootstrap_error():
    rows = _rows(("a", "psnr", 10.0, {"stderr": 0.3}), ("b", "psnr", 9.5, {"stderr": 0.4}))
    out = evaluate(_toy_claim(1), rows, SUITES_READ)
    assert out.quantities["gain"].stderr == pytest.approx(0.5)     # hypot(0.3, 0.4)
    assert out.verdict == INCONCLUSIVE                               # 0.5 - 1.0 < 0 < 0.5 + 1.0


def test_fewer_seeds_than_declared_cannot_hold():
    rows = _rows(("a", "psnr", 12.0, {}), ("b", "psnr", 9.0, {}))
    out = evaluate(_toy_claim(3), rows, SUITES_READ)
    assert out.verdict == INCONCLUSIVE and "1 of 3 seeds" in out.note


def test_a_recorded_nan_error_makes_the_check_inconclusive():
    rows = _rows(("a", "psnr", 12.0, {"stderr": float("nan")}), ("b", "psnr", 9.0, {"stderr": 0.1}))
    assert evaluate(_toy_claim(1), rows, SUITES_READ).verdict == INCONCLUSIVE


def test_rows_of_another_protocol_or_an_older_configuration_are_not_read():
    rows = _rows(("a", "psnr", 10.0, {}), ("a", "psnr", 99.0, {}), ("b", "psnr", 9.0, {}), ("a", "psnr", 5.0, {}))
    rows.loc[1, "protocol"] = "llamagen"                  # a legacy-mode row of the same run
    rows.loc[3, "config_hash"] = "old"                    # written earlier by a run since retrained
    rows.loc[3, "finished_at"] = "2026-11-01T00:00:00"
    assert SeedRows(rows, SUITES_READ, 0).value("a", "psnr").value == 10.0


def test_a_measurement_that_cannot_read_its_rows_is_not_measured():
    claim = Claim("odd", "s", "src", "p", "m", lambda rows: {"q": Estimate(rows.curve("a", "psnr")[8])},
                  (Check("q", ">", 0.0),), runs=("a",))
    out = evaluate(claim, _rows(("a", "psnr", 10.0, {"k": 1})), SUITES_READ)
    assert out.verdict == NOT_MEASURED and "KeyError" in out.note


def test_missing_rows_leave_the_claim_not_measured_and_say_which():
    out = evaluate(_toy_claim(1), _rows(("a", "psnr", 10.0, {})), SUITES_READ)
    assert out.verdict == NOT_MEASURED and "default/b" in out.note


def test_a_label_is_read_from_the_claims_suite_when_the_default_suite_lacks_it():
    rows = pd.concat([_rows(("a", "psnr", 10.0, {})),
                      _rows(("b", "psnr", 9.0, {})).assign(run_id="claims/b")])
    assert evaluate(_toy_claim(1), rows, SUITES_READ).verdict == HOLDS


def test_binomial_error_of_an_accuracy():
    e = SeedRows(_rows(("a", "probe_top1_k10", 0.25, {})), SUITES_READ, 0).value("a", "probe_top1_k10", binomial=True)
    assert e.stderr == pytest.approx(math.sqrt(0.25 * 0.75 / 2000))


def test_every_claim_is_complete_and_reads_runs_that_a_suite_trains():
    default = {r.label for r in SUITES.get("default").runs} | {g.label for g in SUITES.get("default").generators}
    extra = {r.label for r in SUITES.get("claims").runs} | {g.label for g in SUITES.get("claims").generators}
    assert len(CLAIMS) >= 8
    for entry in CLAIMS.entries():
        claim = entry.obj
        assert claim.statement and claim.source and claim.paper_value and claim.measures, claim.name
        assert set(claim.runs) <= default | extra, claim.name
        if claim.main_job:                      # python run_all.py trains only the default suite
            assert set(claim.runs) <= default, claim.name


def test_main_job_claims_on_a_recorded_default_run():
    """The recorded run (before the codebook-initialisation fix): every main-job claim is measured, and
    the measurement is what those rows say (e.g. the nested-dropout gain is 1.78 dB over k = 1..8)."""
    rows = ResultsStore(RECORDED).read()
    outcomes = {o.claim.name: o for o in measure_claims(rows)}
    for name, o in outcomes.items():
        assert (o.verdict == NOT_MEASURED) == (not o.claim.main_job), name
    dropout = outcomes["nested-dropout-prefixes"]
    assert dropout.quantities["short_prefix_gain_db"].value == pytest.approx(1.78, abs=0.01)
    assert dropout.verdict == HOLDS
    cliff = outcomes["entropy-cliff"]
    assert cliff.quantities["bound_t_star_constant"].value == 2
    assert cliff.verdict == FAILS               # that run's VCQ sat on its plateau: t* far past the bound
    assert outcomes["vcq-ar-without-cfg"].verdict == FAILS
    generators = outcomes["channel-generators-vs-patch"]
    assert generators.quantities["params_ratio_masked_to_maskgit"].value == pytest.approx(1.0, abs=0.05)


def test_claims_table_and_figures(tmp_path):
    rows = ResultsStore(RECORDED).read()
    paths = write_claims(measure_claims(rows), tmp_path)
    names = {p.name for p in paths}
    assert {"claims.md", "claims.csv", "claims.tex"} <= names
    assert "claims_nested-dropout-prefixes.png" in names and "claims_nested-dropout-prefixes.pdf" in names
    assert not any(n.startswith("claims_fq-") for n in names)      # not measured: no figure
    md = (tmp_path / "claims.md").read_text()
    assert md.count("\n| ") == len(CLAIMS) and "Verdict rule" in md     # one row per claim below the header
    csv = pd.read_csv(tmp_path / "claims.csv")
    assert list(csv.columns)[:6] == ["claim", "source", "paper's number", "vqbench's measurement", "test", "verdict"]
    assert set(csv["verdict"]) <= {HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED}


def test_table_cells_are_escaped():
    claim = Claim("x", "a | b <script>", "s", "p", "m", lambda r: {"q": Estimate(1.0)}, (Check("q", ">", 0.0),), runs=())
    md = claims_frame([evaluate(claim, _rows(), SUITES_READ)]).pipe(lambda df: df)
    from harness.claims.report import to_markdown
    text = to_markdown(md)
    assert "<script>" not in text and "a \\| b" in text


def test_table_only_without_results_is_one_line_and_exit_2(tmp_path):
    with pytest.raises(VQBenchError, match="no results store"):
        write_claims_table(tmp_path)
    r = run_cli("claims", "--table-only", "--out", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "run_all.py" in r.stderr


def test_table_only_cli_writes_the_table(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(RECORDED.read_bytes())
    r = run_cli("claims", "--table-only", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "claims.md").is_file() and "nested channel dropout" in r.stdout.lower()


def test_list_claims():
    r = run_cli("list", "claims")
    assert r.returncode == 0 and "entropy-cliff" in r.stdout
