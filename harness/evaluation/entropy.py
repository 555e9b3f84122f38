"""The entropy cliff (VCQ paper, Sec. 2): exact per-position conditional entropy of token sequences.

For N token sequences x = (x_0, ..., x_{T-1}) (a split encoded by a tokenizer), the empirical
conditional entropy at position t is ``H_t = H(x_t | x_<t) = H(x_<=t) - H(x_<t)`` in bits, where
H(x_<=t) is the entropy of the empirical distribution of the length-(t+1) prefixes. The chain rule
gives ``sum_t H_t = H(x) <= log2 N``: a training set holds at most log2 N bits, and a codebook of
size K_t spends at most log2 K_t of them at position t.

Definitions used throughout (positions are 0-based, t* counts positions):

- remaining budget after position t: ``log2 N - sum_{s<=t} H_s`` (the paper's Fig. 2(a)); it ends
  at ``log2 N - H(x)``, which is 0 unless some sequences are identical (the *residual*).
- empirical t*: the smallest t in 0..T such that the entropy left after the first t tokens,
  ``sum_{s>=t} H_s = H(x) - H(x_<t)``, is at most ``threshold_bits`` (default 1 bit: on average a
  prefix of length t* leaves at most a coin flip between training sequences, and every later
  position is near-deterministic). Measuring the tail rather than one H_t keeps a single
  deterministic position (x_t = f(x_<t)) from passing for the cliff, and measuring against H(x)
  rather than log2 N keeps duplicate sequences from postponing it forever.
- bound t*: the paper's Proposition 1, ``ceil(log2 N / log2 K)`` for a constant codebook
  (``schedules.constant_cliff``) and, for a variable K_t, the first t at which the cumulative
  capacity ``sum_{s<t} log2 K_s`` reaches log2 N (``schedules.capacity_cliff``; None if never).
  The bound assumes every earlier position used its whole codebook uniformly; with utilization
  below 100% the empirical cliff comes later (the paper: "may occur slightly later"), and a split
  whose sequences repeat can collapse earlier.

Factorized layouts (FQGAN, N x T x k): by default (``factors="joint"``) each position's k-tuple is
one symbol of an alphabet of size K_t ** k, matching an autoregressive model that predicts a whole
position per step; ``factors="flatten"`` treats the k factors as k consecutive positions instead
(order t0f0, t0f1, ..., t1f0, ...).

Algorithm (exact, no hashing): each distinct prefix gets an integer id; the ids of x_<=t are the
ranks of the int64 keys ``id(x_<t) * K'_t + x_t`` (``np.unique``). Only sequences whose prefix is
still shared with another sequence can contribute entropy later, so a sequence leaves the working
set as soon as its prefix is unique, only the groups whose rows disagree at t are sorted, and H_t
comes from the sizes of the groups that split: ``H_t = (sum_g n_g log2 n_g - sum_c n_c log2 n_c) / N``.
Once every prefix is unique the remaining entropies are exactly 0; identical sequences cost one
comparison per later position. ImageNet scale (1.28M x 256, K = 16384) takes 0.8 s for uniform
codes and 7 s in the all-duplicates worst case, with ~150 MB beyond the token array, on a 2-core
CPU (benchmarks/results/entropy_cliff_cpu.md).
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.evaluation.recording import Evaluation, LoadedRun, Measurement, load_run, record, register_evaluation
from harness.models.schedules import capacity_cliff, constant_cliff

DEFAULT_THRESHOLD_BITS = 1.0
HEAD_POSITIONS = 4          # the metric's summary of the first positions (entropy_head_bits)
_INT64_LIMIT = 2 ** 62      # keys stay below this, safely inside int64
FactorMode = Literal["joint", "flatten"]


@dataclass(frozen=True)
class EntropyProfile:
    """Per-position conditional entropies of N sequences of length T, and the cliff they imply."""
    n_sequences: int
    codebook_sizes: tuple[int, ...]        # K_t per position (K_t ** k for joint factors)
    conditional_entropy: np.ndarray        # H_t in bits, shape (T,)
    distinct_prefixes: np.ndarray          # number of distinct x_<=t, shape (T,)
    threshold_bits: float = DEFAULT_THRESHOLD_BITS

    @property
    def num_positions(self) -> int:
        return len(self.conditional_entropy)

    @property
    def log2_n(self) -> float:
        return math.log2(self.n_sequences)

    @property
    def joint_entropy(self) -> float:
        """H(x) in bits: log2 N exactly when all sequences are distinct."""
        return float(self.conditional_entropy.sum())

    @property
    def remaining_budget(self) -> np.ndarray:
        """log2 N - sum_{s<=t} H_s: the bits of the dataset left after position t."""
        return np.maximum(self.log2_n - np.cumsum(self.conditional_entropy), 0.0)

    @property
    def tail_entropy(self) -> np.ndarray:
        """sum_{s>=t} H_s for t = 0..T (the last entry is 0): the information the first t tokens leave."""
        return np.concatenate([np.cumsum(self.conditional_entropy[::-1])[::-1], [0.0]])

    @property
    def residual_bits(self) -> float:
        """log2 N - H(x): the information lost to identical token sequences (0 when all are distinct)."""
        residual = self.log2_n - self.joint_entropy
        return residual if residual > 1e-9 else 0.0      # float rounding of an exact 0

    @property
    def capacity_budget(self) -> np.ndarray:
        """log2 N - sum_{s<=t} log2 K_s: the remaining budget if every position used its whole codebook."""
        return self.log2_n - np.cumsum(np.log2(np.asarray(self.codebook_sizes, dtype=np.float64)))

    @property
    def t_star(self) -> int:
        """Empirical t*: the fewest leading tokens that leave at most ``threshold_bits`` (module docstring)."""
        return int(np.flatnonzero(self.tail_entropy <= self.threshold_bits + 1e-9)[0])

    @property
    def bound_t_star(self) -> int | None:
        """Proposition 1's t* for this N and these K_t; None when the capacity never reaches log2 N."""
        if len(set(self.codebook_sizes)) == 1:
            t = constant_cliff(self.n_sequences, self.codebook_sizes[0])
            return t if t <= self.num_positions else None
        return capacity_cliff(tuple(self.codebook_sizes), self.n_sequences)

    def head_entropy(self, positions: int = HEAD_POSITIONS) -> float:
        """Mean H_t over the first ``positions`` positions (fewer if T is shorter)."""
        return float(self.conditional_entropy[:positions].mean())

    def table(self) -> list[dict]:
        """One dict per position: t, K_t, H_t, remaining budget, capacity budget, distinct prefixes."""
        budget, capacity = self.remaining_budget, self.capacity_budget
        return [{"t": t, "codebook_size": k, "conditional_entropy_bits": float(h),
                 "remaining_budget_bits": float(b), "capacity_budget_bits": float(c), "distinct_prefixes": int(d)}
                for t, (k, h, b, c, d) in enumerate(zip(self.codebook_sizes, self.conditional_entropy, budget,
                                                        capacity, self.distinct_prefixes))]

    def to_csv(self) -> str:
        rows = self.table()
        head = ",".join(rows[0])
        lines = [",".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in r.values()) for r in rows]
        return "\n".join([head, *lines]) + "\n"


# ------------------------------------------------------------------------------------------------ input
def _as_array(indices, what: str) -> np.ndarray:
    if hasattr(indices, "detach"):                       # torch tensor: a view, no copy on the CPU
        indices = indices.detach().cpu().numpy()
    x = np.asarray(indices)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.integer):
        raise VQBenchError(f"{what}: token indices must be integers, got dtype {x.dtype}")
    if x.ndim not in (2, 3) or x.shape[0] < 2 or x.shape[1] < 1 or (x.ndim == 3 and x.shape[2] < 1):
        raise VQBenchError(f"{what}: expected token indices of shape N x T (or N x T x k) with N >= 2, "
                           f"got shape {x.shape}")
    return x


def _check_sizes(x: np.ndarray, codebook_sizes, what: str) -> tuple[int, ...]:
    """Per-position K_t (validated against the indices); default: max index + 1, constant."""
    t = x.shape[1]
    lo = int(x.min())
    if lo < 0:
        raise VQBenchError(f"{what}: negative token index {lo}; indices must lie in [0, K)")
    top = x.max(axis=0) if x.ndim == 2 else x.max(axis=(0, 2))          # per position
    if codebook_sizes is None:
        return (int(top.max()) + 1,) * t
    sizes = (int(codebook_sizes),) * t if np.isscalar(codebook_sizes) else tuple(int(k) for k in codebook_sizes)
    if len(sizes) != t:
        raise VQBenchError(f"{what}: {len(sizes)} codebook sizes for {t} positions")
    if min(sizes) < 1:
        raise VQBenchError(f"{what}: codebook sizes must be positive, got {min(sizes)}")
    bad = np.flatnonzero(top >= np.asarray(sizes))
    if bad.size:
        p = int(bad[0])
        raise VQBenchError(f"{what}: index {int(top[p])} at position {p} is outside its codebook of size "
                           f"{sizes[p]}; pass the right --codebook-size")
    return sizes


# ------------------------------------------------------------------------------------------------ core
def _plogp_sum(counts: np.ndarray) -> float:
    """sum n log2 n over group sizes (singletons contribute 0)."""
    c = counts[counts > 1].astype(np.float64)
    return float(np.dot(c, np.log2(c)))


def conditional_entropies(indices, codebook_sizes: int | Sequence[int] | None = None, *,
                          factors: FactorMode = "joint", threshold_bits: float = DEFAULT_THRESHOLD_BITS,
                          what: str = "indices") -> EntropyProfile:
    """Exact H(x_t | x_<t) for every position of N sequences (module docstring).

    ``indices``: N x T (or N x T x k) integers, numpy (a memory map is fine: only one column at a time
    is read) or torch. ``codebook_sizes``: one K, K_t per position, or None for max index + 1.
    """
    x = _as_array(indices, what)
    sizes = _check_sizes(x, codebook_sizes, what)
    if x.ndim == 3 and factors == "flatten":
        n, t, k = x.shape
        x, sizes = x.reshape(n, t * k), tuple(s for s in sizes for _ in range(k))
    elif x.ndim == 3 and factors != "joint":
        raise VQBenchError(f"factors must be 'joint' or 'flatten', not {factors!r}")
    n, num_t = x.shape[:2]
    k_factors = x.shape[2] if x.ndim == 3 else 1
    symbol_sizes = tuple(s ** k_factors for s in sizes)

    entropy = np.zeros(num_t)
    distinct = np.full(num_t, n, dtype=np.int64)
    rows = np.arange(n)                          # the working set: rows whose prefix is still shared
    group = np.zeros(n, dtype=np.int64)          # id of each working row's prefix x_<t
    size_of = np.array([n], dtype=np.int64)      # rows per id (0 once an id has split)
    n_groups, settled = 1, 0                     # live shared groups; rows already unique
    for t in range(num_t):
        if n_groups == 0:                        # every prefix unique: the rest is exactly 0 bits
            break
        symbol = _symbols(x[rows, t], sizes[t])
        # only groups whose rows disagree at t split: find them without sorting (one representative
        # symbol per group), so runs of positions where no prefix splits (duplicate sequences, long
        # shared prefixes) cost a gather and a comparison
        head = np.zeros(len(size_of), dtype=np.int64)
        head[group] = symbol
        splits = np.zeros(len(size_of), dtype=bool)
        splits[group[symbol != head[group]]] = True
        if not splits.any():
            distinct[t] = settled + n_groups
            continue
        moving = splits[group]
        g, sym = group[moving], symbol[moving]
        radix = symbol_sizes[t]
        if len(size_of) * radix >= _INT64_LIMIT:     # keep keys inside int64: rank the symbols first
            _, sym = np.unique(sym, return_inverse=True)
            sym, radix = sym.reshape(-1), int(sym.max()) + 1
        _, inverse, counts = np.unique(g * radix + sym, return_inverse=True, return_counts=True)
        entropy[t] = max(0.0, (_plogp_sum(size_of[splits]) - _plogp_sum(counts)) / n)
        # the split groups' rows get fresh ids; rows whose new prefix is unique leave the working set
        group[moving] = len(size_of) + inverse.reshape(-1)
        n_groups += int((counts > 1).sum()) - int(splits.sum())
        size_of[splits] = 0
        size_of = np.concatenate([size_of, counts])
        keep = size_of[group] > 1
        settled += int(len(keep) - keep.sum())
        rows, group = rows[keep], group[keep]
        distinct[t] = settled + n_groups
        if len(size_of) > 4 * len(group) + 1024:     # renumber the ids densely now and then
            ids, group = np.unique(group, return_inverse=True)
            size_of, group = size_of[ids], group.reshape(-1)
    return EntropyProfile(n, symbol_sizes, entropy, distinct, float(threshold_bits))


def _symbols(col: np.ndarray, size: int) -> np.ndarray:
    """One int64 symbol per row: the code, or the mixed-radix number of a position's k factor codes."""
    if col.ndim == 1:
        return col.astype(np.int64)
    out = np.zeros(len(col), dtype=np.int64)
    for f in range(col.shape[1]):
        out = out * size + col[:, f]
    return out


# ------------------------------------------------------------------------------------------------ sources
def load_token_file(path: str | Path) -> np.ndarray:
    """N x T (x k) indices from a .npy (memory-mapped) or a .pt file holding one tensor."""
    path = Path(path)
    if not path.exists():
        raise VQBenchError(f"token file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if suffix == ".pt":
            import torch
            import warnings
            with warnings.catch_warnings():            # torch warns about raw pickles before refusing them
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
            if not torch.is_tensor(obj):
                raise VQBenchError(f"{path} holds a {type(obj).__name__}, not one tensor of token indices")
            return obj.numpy()
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        # weights_only / allow_pickle=False refused or failed: nothing in the file was executed
        why = "it holds pickled objects, which are never loaded" if isinstance(e, pickle.UnpicklingError) \
            else e.__class__.__name__
        raise VQBenchError(f"cannot read token file {path} ({why}); save the indices with numpy.save or "
                           "torch.save of one integer tensor") from None
    raise VQBenchError(f"{path}: expected a .npy or .pt file of N x T token indices, or a run folder")


def _encode(model, ds, batch_size: int, device, progress: bool) -> np.ndarray:
    """Token indices N x T (x k) of every image of ``ds``, as compact ints."""
    import torch
    dtype = np.int16 if model.layout.max_codebook_size <= 2 ** 15 else np.int32
    out = np.empty((len(ds), *model.layout.index_shape), dtype=dtype)
    starts = range(0, len(ds), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="encode", dynamic_ncols=True)
    with torch.no_grad():
        for s in starts:
            real, _ = ds.batch(torch.arange(s, min(s + batch_size, len(ds))))
            idx = model.encode(real.to(device))
            out[s:s + len(idx)] = idx.reshape(len(idx), *model.layout.index_shape).cpu().numpy()
    return out


def encode_split(checkpoint: str | Path, *, split: str = "train", n: int | None = None,
                 dataset: str | None = None, batch_size: int = 250, device: str = "cpu",
                 progress: bool = False):
    """Encode a split with a trained tokenizer: (indices N x T (x k) as compact ints, model, state, dataset).

    Default: the training split the run was trained on (its ``n_train`` subset), as the paper measures.
    """
    run = load_run(checkpoint, device)
    curve = EntropyCurve(split=split, n=n, dataset=dataset, batch_size=batch_size, progress=progress)
    return curve.encode(run, device), run.model, run.state, curve.dataset_of(run)


# ------------------------------------------------------------------------------------------------ summary
SUMMARY_HIGHER_IS_BETTER = {"entropy_cliff_t_star": True, "entropy_cliff_bound": True,
                            "entropy_head_bits": False, "entropy_residual_bits": False}


def summary_values(profile: EntropyProfile) -> tuple[dict[str, float], dict[str, str]]:
    """The ``entropy_cliff`` values of a profile (harness/evaluation/metrics/cliff.py), and why any is NaN."""
    bound = profile.bound_t_star
    reasons = {} if bound is not None else {
        "entropy_cliff_bound": f"the capacity sum_t log2 K_t of {profile.num_positions} positions never "
                               f"reaches log2 N = {profile.log2_n:.2f} bits"}
    return {"entropy_cliff_t_star": float(profile.t_star),
            "entropy_cliff_bound": float(bound) if bound is not None else math.nan,
            "entropy_head_bits": profile.head_entropy(HEAD_POSITIONS),
            "entropy_residual_bits": profile.residual_bits}, reasons


CURVE_METRIC = "cond_entropy_bits"


def profiles_from_rows(df) -> dict[str, EntropyProfile]:
    """Entropy profiles rebuilt from ``cond_entropy_bits`` curve rows, one per (run, dataset, split)."""
    from harness.core.results import row_extra
    rows = df[df["metric"] == CURVE_METRIC]
    out = {}
    for (run_id, dataset, split), group in rows.groupby(["run_id", "dataset", "split"], sort=False):
        extra = [row_extra(r) for _, r in group.iterrows()]
        order = np.argsort([e["k"] for e in extra])
        extra = [extra[i] for i in order]
        values = group["value"].to_numpy(dtype=np.float64)[order]
        label = str(run_id) if rows["split"].nunique() == 1 else f"{run_id} ({split})"
        out[label] = EntropyProfile(int(group["n_images"].iloc[0]), tuple(int(e["codebook_size"]) for e in extra),
                                    values, np.array([e.get("distinct_prefixes", 0) for e in extra]),
                                    float(extra[0].get("threshold_bits", 1.0)))
    return out


# ------------------------------------------------------------------------------------------------ runs
@register_evaluation
@dataclass(frozen=True)
class EntropyCurve(Evaluation):
    """the entropy-per-position curve H(x_t | x_<t) of a split's token sequences, and its cliff"""
    name = "entropy-curve"
    split: str = "train"
    n: int | None = None                   # None: on the training split, the run's own n_train subset
    dataset: str | None = None
    factors: FactorMode = "joint"
    threshold_bits: float = DEFAULT_THRESHOLD_BITS
    summary: bool = True                   # also the entropy_cliff summary values
    codebook_size: int | None = None       # None: the layout's K_t
    batch_size: int = 250
    progress: bool = False

    def n_for(self, run: LoadedRun) -> int | None:
        return self.n if self.n is not None or self.split != "train" else run.state["data"].get("n_train")

    def settings(self, run: LoadedRun) -> dict:
        return {"split": self.split, "n": self.n_for(run), "factors": self.factors,
                "threshold_bits": self.threshold_bits, "codebook_size": self.codebook_size}

    def yields(self, run: LoadedRun) -> set:
        layout = run.model.layout
        positions = layout.num_positions * (layout.num_factors if self.factors == "flatten" else 1)
        keys = {(CURVE_METRIC, t) for t in range(positions)}
        return keys | ({(name, None) for name in SUMMARY_HIGHER_IS_BETTER} if self.summary else set())

    def encode(self, run: LoadedRun, device) -> np.ndarray:
        from harness.data.datasets import open_dataset
        ds = open_dataset(self.dataset_of(run), self.split, resolution=run.resolution, channels=run.channels,
                          n=self.n_for(run))
        return _encode(run.model, ds, self.batch_size, device, self.progress)

    def profile(self, run: LoadedRun, device) -> EntropyProfile:
        sizes = self.codebook_size if self.codebook_size is not None else run.model.layout.codebook_sizes
        return conditional_entropies(self.encode(run, device), sizes, factors=self.factors,
                                     threshold_bits=self.threshold_bits, what=str(run.path))

    def measure(self, run: LoadedRun, d: Dist, todo: set) -> list[Measurement]:
        profile = self.profile(run, d.device)
        base = {"factors": self.factors, "threshold_bits": profile.threshold_bits}
        out = [Measurement(CURVE_METRIC, r["conditional_entropy_bits"], False, profile.n_sequences, k=r["t"],
                           extra=base | {"unit": "position", "codebook_size": r["codebook_size"],
                                         "distinct_prefixes": r["distinct_prefixes"]})
               for r in profile.table()]
        if self.summary:
            values, reasons = summary_values(profile)
            out += [Measurement(name, v, SUMMARY_HIGHER_IS_BETTER[name], profile.n_sequences,
                                reason=reasons.get(name, ""), extra=base | {"metric_source": "entropy_cliff"})
                    for name, v in values.items()]
        return out


def analyze_tokens(source: str | Path, *, codebook_size: int | None = None, factors: FactorMode = "joint",
                   threshold_bits: float = DEFAULT_THRESHOLD_BITS, split: str = "train", n: int | None = None,
                   dataset: str | None = None, batch_size: int = 250, device: str = "auto",
                   results: str | Path | None = None, run_id: str | None = None, summary: bool = True,
                   skip_if_recorded: bool = True, progress: bool = False) -> tuple[EntropyProfile, str]:
    """The entropy profile of a token file (.npy/.pt) or of a run's encoded split, and a label for it.

    For a run, ``results`` also records the curve (metric ``cond_entropy_bits``, one row per position,
    ``extra`` k = position) and, with ``summary``, the summary values (the pipeline's skip and
    replacement rules: harness.evaluation.recording). ``run_id`` labels the rows (default: the run
    folder's name).
    """
    source = Path(source)
    if not source.is_dir():
        if results is not None:
            raise VQBenchError(f"--results records a run's analysis; {source} is a token file, not a run folder")
        x = load_token_file(source)
        return conditional_entropies(x, codebook_size, factors=factors, threshold_bits=threshold_bits,
                                     what=str(source)), source.stem
    import pandas as pd
    from harness.core.distributed import setup
    from harness.core.results import ResultsStore
    d = setup(device)
    run = load_run(source, d.device, run_id)
    curve = EntropyCurve(split, n, dataset, factors, threshold_bits, summary, codebook_size, batch_size, progress)
    if results is None:
        return curve.profile(run, d.device), run.run_id
    rows = record(run, [curve], ResultsStore(results), d, skip_recorded=skip_if_recorded)
    profile, = profiles_from_rows(pd.DataFrame(rows)).values()
    return profile, run.run_id
