"""The entropy cliff (harness/entropy.py, the entropy_cliff metric, `vqbench analyze entropy`).

Analytic cases whose conditional entropies are known exactly, agreement with a brute-force
dict-of-prefixes computation, the bounds of the VCQ paper, the streaming metric (also under a
2-process gloo group), the CLI and its one-line errors.
"""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.core.contracts import EvalBatch, TokenLayout
from harness.evaluation.entropy import conditional_entropies, summary_values
from harness.core.errors import VQBenchError
from harness.evaluation.pipeline import build_metrics, metric_values
from harness.models.schedules import capacity_cliff, codebook_schedule, constant_cliff


def brute_force(x: np.ndarray) -> np.ndarray:
    """H(x_<=t) - H(x_<t) from a dictionary of prefix tuples, per position (the definition)."""
    n = len(x)

    def h(prefix_len):
        counts = Counter(map(tuple, x.reshape(n, x.shape[1], -1)[:, :prefix_len].reshape(n, -1).tolist()))
        return -sum(c / n * math.log2(c / n) for c in counts.values())
    joint = [h(t) for t in range(x.shape[1] + 1)]
    return np.diff(joint)


# ----------------------------------------------------------------------------------- analytic cases
def test_all_codes_equally_often_give_log2_k_at_the_first_position():
    k = 32
    x = np.stack([np.repeat(np.arange(k), 8), np.zeros(8 * k, dtype=np.int64)], axis=1)   # each code 8 times
    p = conditional_entropies(x, k)
    assert p.conditional_entropy[0] == pytest.approx(math.log2(k), abs=1e-12)
    assert p.conditional_entropy[1] == 0.0


def test_deterministic_position_has_zero_entropy_and_does_not_fake_the_cliff():
    rng = np.random.default_rng(0)
    n, k = 4096, 16
    x0 = np.repeat(np.arange(k), n // k)                   # exactly uniform: H_0 = 4 bits
    x1 = (7 * x0 + 3) % k                                  # x_1 = f(x_0): H_1 = 0 exactly
    x2 = rng.integers(0, k, n)                             # fresh randomness after the deterministic step
    p = conditional_entropies(np.stack([x0, x1, x2], axis=1), k)
    assert p.conditional_entropy[0] == pytest.approx(4.0, abs=1e-12)
    assert p.conditional_entropy[1] == 0.0
    assert p.conditional_entropy[2] > 3.5                  # 256 sequences per prefix, 16 equally likely codes
    assert p.t_star == 3                                   # the tail after t = 1 still holds > 1 bit


def test_independent_uniform_positions_with_all_tuples_present_give_log2_k_each():
    # N = K^T: every sequence exactly once (N >> K^t for t < T): H_t = log2 K at every position
    k, t = 4, 5
    grid = np.stack(np.meshgrid(*[np.arange(k)] * t, indexing="ij"), -1).reshape(-1, t)
    p = conditional_entropies(grid, k)
    np.testing.assert_allclose(p.conditional_entropy, 2.0, atol=1e-12)
    assert p.joint_entropy == pytest.approx(math.log2(len(grid)))
    assert p.residual_bits == 0.0
    assert p.bound_t_star == constant_cliff(len(grid), k) == t
    np.testing.assert_allclose(p.remaining_budget, [8, 6, 4, 2, 0], atol=1e-12)


def test_k_to_the_t_much_larger_than_n_exhausts_log2_n_at_the_bound():
    # K^2 >> N: the first position takes ~log2 K, the second the rest of log2 N, then zero
    rng = np.random.default_rng(1)
    n, k, t = 20000, 4096, 12
    p = conditional_entropies(rng.integers(0, k, (n, t)), k)
    assert math.log2(k) - 0.2 < p.conditional_entropy[0] <= math.log2(k)      # ~5 samples per code
    # ~N^2 / (2 K^2) = 12 pairs share their first two codes: ~0.001 bits left for position 2
    assert p.conditional_entropy[:2].sum() == pytest.approx(math.log2(n), abs=0.005)
    assert p.conditional_entropy[3:].sum() == 0.0
    assert p.t_star == p.bound_t_star == constant_cliff(n, k) == 2
    assert int(p.distinct_prefixes[-1]) == n


def test_markov_chain_with_huge_n_approaches_its_transition_entropy():
    # x_0 uniform over 4 codes, then each step keeps the code with prob 1/2 or moves to one of 2
    # others (1/4 each): H(x_t | x_<t) = H(1/2, 1/4, 1/4) = 1.5 bits while N >> 4 * 3^t prefixes
    rng = np.random.default_rng(2)
    n, k, steps = 400_000, 4, 4
    x = np.empty((n, steps), dtype=np.int64)
    x[:, 0] = rng.integers(0, k, n)
    for s in range(1, steps):
        move = rng.choice([0, 1, 2], size=n, p=[0.5, 0.25, 0.25])
        x[:, s] = (x[:, s - 1] + move) % k
    p = conditional_entropies(x, k)
    assert p.conditional_entropy[0] == pytest.approx(2.0, abs=1e-3)
    np.testing.assert_allclose(p.conditional_entropy[1:], 1.5, atol=2e-3)


def test_agrees_with_brute_force_prefix_dictionaries():
    rng = np.random.default_rng(3)
    for n, t, k in [(300, 6, 5), (2000, 8, 3), (50, 4, 200), (1000, 5, 2)]:
        x = rng.integers(0, k, (n, t))
        x[: n // 10] = x[n // 10: 2 * (n // 10)]           # some identical sequences
        p = conditional_entropies(x, k)
        np.testing.assert_allclose(p.conditional_entropy, brute_force(x), atol=1e-10)
        assert list(p.distinct_prefixes) == [len({tuple(r) for r in x[:, :i + 1].tolist()}) for i in range(t)]


def test_agrees_with_brute_force_on_long_shared_prefixes_and_duplicates():
    # copies that differ only near the end keep groups alive for many positions without splitting,
    # and the many ids created early exercise the renumbering of prefix ids
    rng = np.random.default_rng(10)
    x = rng.integers(0, 6, (3000, 30))
    x[2900:3000] = x[:100]
    x[2900:2950, -3:] = rng.integers(0, 6, (50, 3))
    x[2980:] = x[2980]                                     # 20 identical rows
    p = conditional_entropies(x, 6)
    np.testing.assert_allclose(p.conditional_entropy, brute_force(x), atol=1e-10)
    assert p.conditional_entropy[-3:].sum() > 0 and p.residual_bits > 0


def test_factor_tuples_are_one_symbol_or_flattened_positions():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, (500, 4, 2))
    joint = conditional_entropies(x, 3)
    np.testing.assert_allclose(joint.conditional_entropy, brute_force(x), atol=1e-10)
    assert joint.codebook_sizes == (9,) * 4
    flat = conditional_entropies(x, 3, factors="flatten")
    np.testing.assert_allclose(flat.conditional_entropy, brute_force(x.reshape(500, 8)), atol=1e-10)
    assert flat.joint_entropy == pytest.approx(joint.joint_entropy, abs=1e-10)     # chain rule either way


def test_large_keys_stay_exact():
    # joint symbols of K_t ** k = 2^45 with N groups would overflow an int64 key: ranked first
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2 ** 15, (3000, 3, 3))
    x[:, 0] = x[0, 0]                                      # one shared prefix group, then splits
    p = conditional_entropies(x, 2 ** 15)
    np.testing.assert_allclose(p.conditional_entropy, brute_force(x), atol=1e-10)


def test_duplicates_and_the_residual():
    x = np.array([[0, 1, 2]] * 4 + [[0, 1, 3]] * 4)       # two sequences, four copies each
    p = conditional_entropies(x, 4)
    np.testing.assert_allclose(p.conditional_entropy, [0, 0, 1], atol=1e-12)
    assert p.residual_bits == pytest.approx(2.0)           # log2 8 - 1
    assert p.t_star == 0                                   # the whole split holds 1 bit <= the 1-bit threshold
    assert conditional_entropies(x, 4, threshold_bits=0.5).t_star == 3   # that bit comes at t = 2
    assert p.tail_entropy[-1] == 0.0


def test_variable_codebook_bound_uses_the_capacity():
    sizes = codebook_schedule("cosine", 2, 64, 16)
    rng = np.random.default_rng(6)
    x = np.stack([rng.integers(0, s, 5000) for s in sizes], axis=1)
    p = conditional_entropies(x, sizes)
    assert p.codebook_sizes == sizes
    assert p.bound_t_star == capacity_cliff(sizes, 5000)
    assert all(h <= math.log2(s) + 1e-9 for h, s in zip(p.conditional_entropy, sizes))
    assert p.t_star >= p.bound_t_star - 1


# ----------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, sizes, match", [
    (np.zeros((5,), dtype=np.int64), None, "shape"),
    (np.zeros((1, 4), dtype=np.int64), None, "N >= 2"),
    (np.array([[0, -1], [1, 2]]), None, "negative"),
    (np.array([[0, 1], [1, 2]]), 2, "position 1 is outside its codebook of size 2"),
    (np.array([[0.5, 1.0], [1.0, 2.0]]), None, "integers"),
    (np.array([[0, 1], [1, 1]]), (4, 4, 4), "3 codebook sizes for 2 positions"),
])
def test_bad_indices_raise_one_line_errors(bad, sizes, match):
    with pytest.raises(VQBenchError, match=match) as e:
        conditional_entropies(bad, sizes)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- the streaming metric
def _feed(metric, x, layout, batch=37):
    for s in range(0, len(x), batch):
        metric.update(EvalBatch(indices=torch.as_tensor(x[s:s + batch]), layout=layout,
                                image_ids=torch.arange(s, min(s + batch, len(x)))))


def test_metric_matches_the_offline_profile_on_a_vcq_layout():
    sizes = codebook_schedule("linear", 2, 32, 10)
    rng = np.random.default_rng(7)
    x = np.stack([rng.integers(0, s, 800) for s in sizes], axis=1)
    m, = build_metrics(["entropy_cliff"])
    _feed(m, x, TokenLayout(10, sizes, position_kind="latent"))
    got = {v.name: v.value for v in metric_values([m])}
    want, _ = summary_values(conditional_entropies(x, sizes))
    assert got == pytest.approx(want, abs=1e-12)
    assert got["entropy_cliff_bound"] == capacity_cliff(sizes, 800)


def test_metric_on_factorized_layout_and_uniform_first_code():
    k = 16
    x = np.stack([np.repeat(np.arange(k), 20), np.zeros(20 * k, dtype=np.int64)], axis=1)
    x = np.stack([x, x[::-1]], axis=-1)                    # N x T x 2 factors
    m, = build_metrics(["entropy_cliff"])
    _feed(m, x, TokenLayout.constant(2, k, num_factors=2))
    got = {v.name: v.value for v in metric_values([m])}
    # joint symbol at t = 0 is (c, 15 - c): 16 equally likely pairs, then determined
    assert got["entropy_head_bits"] == pytest.approx((4.0 + 0.0) / 2)
    assert got["entropy_residual_bits"] == pytest.approx(math.log2(320) - 4.0)


def test_metric_rejects_repeated_images():
    m, = build_metrics(["entropy_cliff"])
    layout = TokenLayout.constant(3, 8)
    batch = EvalBatch(indices=torch.zeros(4, 3, dtype=torch.int64), layout=layout, image_ids=torch.arange(4))
    m.update(batch)
    m.update(batch)
    with pytest.raises(VQBenchError, match="image id twice"):
        m.compute()


def _ddp_worker(rank, world, port, x, sizes, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from harness.models.catalog import load_all
        from harness.core.distributed import Dist, shard_batches
        load_all()
        m, = build_metrics(["entropy_cliff"])
        layout = TokenLayout(len(sizes), tuple(sizes))
        for rows in shard_batches(len(x), 50, Dist(rank, world)):
            ids = torch.tensor(list(rows))
            m.update(EvalBatch(indices=torch.as_tensor(x[ids.numpy()]), layout=layout, image_ids=ids))
        values = {v.name: v.value for v in metric_values([m])}
        if rank == 0:
            out.put(values)
    finally:
        dist.destroy_process_group()


def test_metric_under_two_gloo_processes_equals_one_process():
    import socket
    import torch.multiprocessing as mp
    rng = np.random.default_rng(8)
    sizes = (64,) * 6
    x = rng.integers(0, 64, (530, 6))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, x, sizes, queue)) for r in range(2)]
    for p in procs:
        p.start()
    sharded = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    single, _ = summary_values(conditional_entropies(x, sizes))
    assert sharded == pytest.approx(single, abs=1e-12)


# ----------------------------------------------------------------------------------- CLI
def test_cli_round_trip_on_a_npy_file(tmp_path, capsys):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 64, (3000, 8)).astype(np.int16)
    np.save(tmp_path / "tokens.npy", x)
    rc = main(["analyze", "entropy", str(tmp_path / "tokens.npy"), "--out", str(tmp_path / "curve.csv"),
               "--figure", str(tmp_path / "fig")])
    out = capsys.readouterr().out
    assert rc == 0
    p = conditional_entropies(x)                           # K = max index + 1 = 64 by default
    assert f"empirical t* = {p.t_star}" in out and f"bound t* = {p.bound_t_star}" in out
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0].startswith("t,codebook_size,conditional_entropy_bits,remaining_budget_bits")
    h = np.array([float(line.split(",")[2]) for line in lines[1:]])
    np.testing.assert_allclose(h, brute_force(x), atol=1e-6)
    for ext in ("pdf", "png"):
        assert (tmp_path / f"fig.{ext}").stat().st_size > 1000
    # a .pt file and an explicit codebook size give the same table with K = 100
    torch.save(torch.as_tensor(x.astype(np.int64)), tmp_path / "tokens.pt")
    assert main(["analyze", "entropy", str(tmp_path / "tokens.pt"), "--codebook-size", "100"]) == 0
    assert "bound t* = 2" in capsys.readouterr().out       # ceil(log2 3000 / log2 100) = 2


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.npy", "does not exist"),
    (lambda d: (np.save(d / "neg.npy", np.array([[0, -3], [1, 2]])), d / "neg.npy")[1], "negative token index"),
    (lambda d: (np.save(d / "flat.npy", np.arange(6)), d / "flat.npy")[1], "shape"),
    (lambda d: ((d / "tok.txt").write_text("1 2"), d / "tok.txt")[1], "expected a .npy or .pt"),
    (lambda d: ((d / "bad.npy").write_bytes(b"not numpy"), d / "bad.npy")[1], "cannot read token file"),
    (lambda d: d, "no checkpoint found"),
])
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, make, match):
    rc = main(["analyze", "entropy", str(make(tmp_path))])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1


def test_cli_codebook_size_too_small(tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.array([[0, 9], [1, 2]]))
    assert main(["analyze", "entropy", str(tmp_path / "t.npy"), "--codebook-size", "8"]) == 2
    assert "outside its codebook of size 8" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- a trained run
@pytest.fixture(scope="module")
def vq_checkpoint(tmp_path_factory):
    from tokenizer_helpers import train_tiny_vq
    return train_tiny_vq(tmp_path_factory.mktemp("vq-tiny"), n_train=64)


def test_cli_on_a_run_folder_encodes_its_training_split_and_records_the_curve(vq_checkpoint, tmp_path, capsys):
    from harness.evaluation.entropy import encode_split
    from harness.reporting.figures import profiles_from_rows
    from harness.core.results import ResultsStore
    store = tmp_path / "results.jsonl"
    rc = main(["analyze", "entropy", str(vq_checkpoint), "--results", str(store), "--device", "cpu", "--quiet"])
    assert rc == 0
    x, model, _, _ = encode_split(vq_checkpoint, split="train")
    assert x.shape == (64, 64)                             # the run's 64 training images, 8x8 tokens
    want = conditional_entropies(x, model.layout.codebook_sizes)
    rows = ResultsStore(store).read()
    curve = rows[rows.metric == "cond_entropy_bits"]
    assert len(curve) == 64 and set(curve.split) == {"train"} and set(curve.n_images) == {64}
    extras = [json.loads(e) for e in curve.extra]
    assert [e["k"] for e in extras] == list(range(64))
    np.testing.assert_allclose(curve.value.to_numpy(), want.conditional_entropy, atol=1e-12)
    summary = dict(zip(rows.metric, rows.value))
    assert summary["entropy_cliff_t_star"] == want.t_star
    rebuilt, = profiles_from_rows(rows).values()
    assert rebuilt.t_star == want.t_star and rebuilt.bound_t_star == want.bound_t_star
    assert f"empirical t* = {want.t_star}" in capsys.readouterr().out
    # recording again replaces the rows instead of adding to them
    assert main(["analyze", "entropy", str(vq_checkpoint), "--results", str(store), "--device", "cpu", "--quiet"]) == 0
    assert len(ResultsStore(store).read()) == len(rows)
