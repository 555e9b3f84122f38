"""FID-family metrics from Inception pool3 features (harness/features.py): FID, KID, precision/recall,
density/coverage, IS.

Definitions (and defaults) are torch-fidelity's, which follow the papers' reference code:

- FID (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` with unbiased
  (N - 1) covariances, float64. The trace of the matrix square root is the sum of square roots of the
  eigenvalues of ``S1 S2``, taken from the similar symmetric matrix ``B^T S2 B`` for a factor
  ``S1 = B B^T`` (Cholesky; the centred features themselves when N <= 2048, an N x N problem), negative
  rounding noise clipped to 0. Only eigenvalues are computed: 5-10x faster on a CPU than ``sqrtm`` or
  an eigendecomposition with vectors, and exact in exact arithmetic.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``, averaged over 100
  random subsets of ``min(1000, N1, N2)`` images per set; subsets are drawn as torch-fidelity draws them
  (``numpy.random.RandomState(2020)``, without replacement, set 1 then set 2 per subset; set 1 is the
  generated or reconstructed set, set 2 the real one, as torch-fidelity's input1/input2), so values
  agree with it. When the kernel matrices of all pairs fit in memory they are computed once and each
  subset's sums are ``w^T K w`` for its 0/1 indicator ``w`` (exact; ~100x less work than kernels per subset).
- Precision/recall (Kynkaenniemi et al. 2019), k = 3: a sample's neighbourhood is the ball reaching
  its k-th nearest neighbour in its own set; precision is the fraction of generated samples inside
  some real ball, recall the fraction of real samples inside some generated ball.
- Density/coverage (Naeem et al. 2020), k = 5: from the real samples' k-NN balls only (strict ``<``, as the
  prdc package); ``density_coverage``.
- IS (Salimans et al. 2016): 10 splits of the shuffled (seed 2020) unbiased logits, ``exp E KL(p(y|x)
  || p(y))`` per split, mean and std over splits. Only with the Inception classifier
  (torch-fidelity's weights file); without it IS is NaN with the reason, never estimated otherwise.

Streaming metrics for tokenizers compare real images with reconstructions of the same split
(``rfid``: rFID and rKID; ``precision-recall``; ``inception-score`` of the reconstructions). Each batch
goes through Inception once (``harness.evaluation.features.batch_features`` memoizes on the batch), real
features come from the split's cached feature set when present, and each metric keeps the features
with their image ids. Under DDP, ``sync`` gathers every rank's features and orders them by image id,
so every value equals the single-process one exactly. ``generation_fidelity`` is the same for
generated samples against a reference split (gFID and company).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from harness.core.contracts import EvalBatch, Metric
from harness.core.distributed import (batch_image_ids, check_distinct_ids, gather_rows, is_main_process,
                                      max_over_ranks)
from harness.core.errors import VQBenchError
from harness.evaluation.features import (EXTRACTOR_NAME, NUM_LOGITS, POOL3_DIM, SPATIAL_DIM, InceptionFeatures, batch_features, cached_feature_set,
                        classifier_unavailable_reason, image_hashes, store_feature_set)
from harness.core.registry import METRICS
from harness.evaluation.metrics.bootstrap import bootstrap_statistic
from harness.evaluation.protocols import DEFAULT_PROTOCOL, FidelityProtocol, check_defined, get_protocol, main_value

KID_SUBSETS, KID_SUBSET_SIZE, KID_DEGREE, KID_COEF0 = 100, 1000, 3, 1.0
PRC_NEIGHBORHOOD = 3
IS_SPLITS = 10
SEED = 2020                          # torch-fidelity's rng_seed: KID subsets and the IS shuffle
GRAM_BYTES = 768 * 2 ** 20           # KID: precompute Gram matrices up to this size
CHUNK_BYTES = 256 * 2 ** 20          # precision/recall: distance blocks up to this size


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().cpu().double()


# --------------------------------------------------------------- FID
def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of N x D features."""
    x = _f64(features)
    if len(x) < 2:
        raise VQBenchError(f"FID needs at least 2 images per set, got {len(x)}")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _trace_sqrt_product(sigma2: torch.Tensor, factor1: torch.Tensor) -> float:
    """tr((S1 S2)^(1/2)) for S1 = B B^T: S1 S2 is similar to the symmetric PSD B^T S2 B, whose
    eigenvalues (rounding noise below 0 clipped) are those of S1 S2; only eigenvalues are needed."""
    m = factor1.T @ sigma2 @ factor1
    return float(torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum())


def _factor(sigma: torch.Tensor) -> torch.Tensor:
    """B with B B^T = sigma: Cholesky, or the eigen-decomposition when sigma is singular."""
    chol, info = torch.linalg.cholesky_ex(sigma)
    if int(info) == 0:
        return chol
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)
    return v * w.clamp_min(0).sqrt()


def fid_against_stats(features, mu, sigma) -> float:
    """FID of a feature set against precomputed statistics (an ADM reference batch's ``mu``/``sigma``);
    the features' own centred data factors their covariance when N <= D, as in ``fid_from_features``."""
    x, mu2, sigma2 = _f64(features), _f64(mu), _f64(sigma)
    if x.shape[1] != mu2.shape[0] or tuple(sigma2.shape) != (mu2.shape[0],) * 2:
        raise VQBenchError(f"features of dimension {x.shape[1]} against statistics of shape {tuple(mu2.shape)} "
                           f"and {tuple(sigma2.shape)}")
    mu1, sigma1 = feature_stats(x)
    factor = (x - mu1).T / math.sqrt(len(x) - 1) if len(x) <= x.shape[1] else _factor(sigma1)
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace()) - 2 * _trace_sqrt_product(sigma2, factor)


def _fid_few(x1: torch.Tensor, x2: torch.Tensor) -> float:
    """FID of two sets of at most D images each: with S_i = A_i^T A_i for the centred, scaled data A_i
    (N_i x D), tr((S1 S2)^(1/2)) is the sum of the singular values of A_1 A_2^T, an N1 x N2 matrix:
    no D x D matrix is formed (exact; what makes bootstrap draws cheap)."""
    mu1, mu2 = x1.mean(0), x2.mean(0)
    a1, a2 = (x1 - mu1) / math.sqrt(len(x1) - 1), (x2 - mu2) / math.sqrt(len(x2) - 1)
    diff = mu1 - mu2
    return float(diff @ diff + a1.square().sum() + a2.square().sum()) - 2 * float(torch.linalg.svdvals(a1 @ a2.T).sum())


def fid_from_features(features_1, features_2) -> float:
    x1, x2 = _f64(features_1), _f64(features_2)
    if min(len(x1), len(x2)) < 2:
        raise VQBenchError(f"FID needs at least 2 images per set, got {len(x1)} and {len(x2)}")
    if max(len(x1), len(x2)) <= x1.shape[1]:
        return _fid_few(x1, x2)
    if len(x2) < len(x1):                  # tr((S1 S2)^(1/2)) is symmetric: factor the smaller set
        x1, x2 = x2, x1
    mu1, sigma1 = feature_stats(x1)
    mu2, sigma2 = feature_stats(x2)
    if len(x1) <= x1.shape[1]:
        # N <= D: the centred data is a factor of S1 with only N columns (an N x N eigenproblem)
        factor = (x1 - mu1).T / math.sqrt(len(x1) - 1)
    else:
        factor = _factor(sigma1)
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace()) - 2 * _trace_sqrt_product(sigma2, factor)


# --------------------------------------------------------------- KID
def kid_from_features(features_1, features_2, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                      degree: int = KID_DEGREE, gamma: float | None = None, coef0: float = KID_COEF0,
                      seed: int = SEED) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``subsets`` random subsets of ``min(subset_size, N1, N2)``;
    ``features_1`` is the generated/reconstructed set, drawn first in each subset (torch-fidelity's
    input1; clean-fid's ``kernel_distance(reference, generated)`` after ``np.random.seed(seed)`` draws the
    same indices)."""
    x, y = _f64(features_1), _f64(features_2)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise VQBenchError(f"KID needs at least 2 images per set, got {len(x)} and {len(y)}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma

    def kernel(a, b):
        return (a @ b.T * gamma + coef0) ** degree

    draws = np.random.RandomState(seed)
    picks = [(draws.choice(len(x), m, replace=False), draws.choice(len(y), m, replace=False))
             for _ in range(subsets)]
    if (len(x) ** 2 + len(y) ** 2 + len(x) * len(y)) * 8 <= GRAM_BYTES:
        # kernels of all pairs once; a subset's kernel sums are then w^T K w for its 0/1 indicator w
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        wx, wy = torch.zeros(subsets, len(x), dtype=torch.float64), torch.zeros(subsets, len(y), dtype=torch.float64)
        for i, (ix, iy) in enumerate(picks):
            wx[i, ix], wy[i, iy] = 1.0, 1.0
        sum_xx, sum_yy = ((wx @ kxx) * wx).sum(1) - wx @ kxx.diagonal(), ((wy @ kyy) * wy).sum(1) - wy @ kyy.diagonal()
        sum_xy = ((wx @ kxy) * wy).sum(1)
    else:
        sums = []
        for ix, iy in picks:
            a, b = x[torch.from_numpy(ix)], y[torch.from_numpy(iy)]
            k_aa, k_bb = kernel(a, a), kernel(b, b)
            sums.append((k_aa.sum() - k_aa.trace(), k_bb.sum() - k_bb.trace(), kernel(a, b).sum()))
        sum_xx, sum_yy, sum_xy = (torch.stack(t) for t in zip(*sums))
    mmds = ((sum_xx + sum_yy) / (m * (m - 1)) - 2 * sum_xy / (m * m)).numpy()
    return float(mmds.mean()), float(mmds.std())


def kid_record(n1: int, n2: int, subset_size: int = KID_SUBSET_SIZE) -> dict:
    """What a KID row records of its subsets: the size used, and whether N forced it below the
    protocol's (then the subsets overlap heavily and the std understates the uncertainty)."""
    used = min(subset_size, n1, n2)
    return {"kid_subset_size": used, "kid_subset_shrunk": used < subset_size}


# --------------------------------------------------------------- precision / recall
def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


def _rows_per_chunk(n_cols: int) -> int:
    return max(1, CHUNK_BYTES // (8 * max(n_cols, 1)))


def _kth_neighbour_sq_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of every row to its k-th nearest other row (the row itself is the 0th)."""
    if len(x) <= k:
        raise VQBenchError(f"precision/recall with k={k} needs more than {k} images per set, got {len(x)}")
    step = _rows_per_chunk(len(x))
    return torch.cat([_sq_dists(c, x).kthvalue(k + 1, dim=1).values for c in x.split(step)])


def _covered(queries: torch.Tensor, centers: torch.Tensor, sq_radii: torch.Tensor) -> torch.Tensor:
    step = _rows_per_chunk(len(centers))
    return torch.cat([(_sq_dists(c, centers) <= sq_radii[None]).any(1) for c in queries.split(step)])


def precision_recall(real_features, fake_features, k: int = PRC_NEIGHBORHOOD) -> tuple[float, float]:
    """(precision, recall) of the fake (generated / reconstructed) set against the real one."""
    real, fake = _f64(real_features), _f64(fake_features)
    precision = _covered(fake, real, _kth_neighbour_sq_radii(real, k)).double().mean()
    recall = _covered(real, fake, _kth_neighbour_sq_radii(fake, k)).double().mean()
    return float(precision), float(recall)


# --------------------------------------------------------------- density / coverage
def density_coverage(real_features, fake_features, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of the fake set against the real one (Naeem et al. 2020), as the prdc package
    computes them: a real sample's ball reaches its k-th nearest other real sample; density is the mean
    number of real balls a fake sample lies strictly inside, divided by k; coverage the fraction of real
    balls holding at least one fake sample. Only real balls are used, so outlying fakes cannot inflate it."""
    real, fake = _f64(real_features), _f64(fake_features)
    sq_radii = _kth_neighbour_sq_radii(real, k)
    step = _rows_per_chunk(len(real))
    inside = torch.cat([_sq_dists(c, real) < sq_radii[None] for c in fake.split(step)])    # fake x real
    density = inside.sum(dtype=torch.float64) / (k * len(fake))
    coverage = inside.any(0).double().mean()
    return float(density), float(coverage)


def _adm_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ADM's pairwise squared distances (its DistanceBlock): features cast to float16, then
    ``max(|u|^2 - 2 u.v + |v|^2, 0)`` with every step rounded to float16 (products and sums accumulated
    in float32 as TF's GPU kernels do); the float32 computation instead when any entry is not finite."""
    a16, b16 = a.float().half(), b.float().half()
    na = a16.float().square().half().float().sum(1).half()
    nb = b16.float().square().half().float().sum(1).half()
    dots = (a16.float() @ b16.float().T).half()
    d = ((na[:, None] - 2 * dots) + nb[None]).clamp_min(0)
    if bool(torch.isfinite(d).all()):
        return d.float()
    a32, b32 = a.float(), b.float()
    return (a32.square().sum(1)[:, None] - 2 * a32 @ b32.T + b32.square().sum(1)[None]).clamp_min(0)


ADM_BATCH = 10000                    # ADM's ManifoldEstimator row/column batch (the fp16 fallback is per block)


def _adm_blocks(n: int):
    return [slice(i, min(i + ADM_BATCH, n)) for i in range(0, n, ADM_BATCH)]


def _adm_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance to the k-th nearest point (the point itself is the 0th), from ADM's distances."""
    if len(x) <= k:
        raise VQBenchError(f"precision/recall with k={k} needs more than {k} images per set, got {len(x)}")
    return torch.cat([torch.cat([_adm_sq_dists(x[r], x[c]) for c in _adm_blocks(len(x))], 1)
                      .kthvalue(k + 1, dim=1).values for r in _adm_blocks(len(x))])


def adm_precision_recall(real_features, fake_features, k: int = PRC_NEIGHBORHOOD) -> tuple[float, float]:
    """(precision, recall) as the ADM evaluator's ManifoldEstimator computes them: squared float16
    distances in blocks of 10,000, radii to the k-th neighbour, a point is inside a ball when its distance
    is <= the radius. Precision: samples inside some reference ball; recall: reference images inside
    some sample ball."""
    real, fake = _f64(real_features).float(), _f64(fake_features).float()
    r_real, r_fake = _adm_radii(real, k), _adm_radii(fake, k)
    real_in = torch.zeros(len(real), dtype=torch.bool)
    fake_in = torch.zeros(len(fake), dtype=torch.bool)
    for r in _adm_blocks(len(real)):
        for c in _adm_blocks(len(fake)):
            d = _adm_sq_dists(real[r], fake[c])
            real_in[r] |= (d <= r_fake[c][None]).any(1)
            fake_in[c] |= (d <= r_real[r][:, None]).any(0)
    return float(fake_in.double().mean()), float(real_in.double().mean())


# --------------------------------------------------------------- Inception Score
def inception_score(logits, splits: int = IS_SPLITS, seed: int = SEED) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(E_x KL(p(y|x) || p(y))), from (unbiased) Inception logits."""
    logits = _f64(logits)
    n = len(logits)
    if n < splits:
        raise VQBenchError(f"the Inception Score with {splits} splits needs at least {splits} images, got {n}")
    logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    log_p = logits.log_softmax(1)
    scores = [_split_score(log_p[i * n // splits:(i + 1) * n // splits]) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


def _split_score(log_p: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of one split's log-probabilities."""
    p = log_p.exp()
    # 0 log 0 = 0: classes no image predicts (p = 0 throughout) contribute nothing, not NaN
    kl = torch.where(p > 0, p * (log_p - p.mean(0).log()), torch.zeros_like(p)).sum(1)
    return float(kl.mean().exp())


def adm_inception_score(logits, split_size: int = 5000) -> tuple[float, float]:
    """The ADM evaluator's IS: softmax of the unbiased logits, consecutive splits of ``split_size`` in
    sample order (the last may be shorter), mean of ``exp E KL`` over splits. ADM reports no spread; the
    std over splits is returned as well, NaN with a single split."""
    log_p = _f64(logits).log_softmax(1)
    scores = [_split_score(log_p[start:start + split_size]) for start in range(0, len(log_p), split_size)]
    if not scores:
        raise VQBenchError("the Inception Score needs at least one image")
    return float(np.mean(scores)), float(np.std(scores)) if len(scores) > 1 else math.nan


BOOTSTRAP_MAX_IMAGES = POOL3_DIM       # FID draws in the N x N form only (cheap); larger sets: no bootstrap


def fid_bootstrap(statistic, n: int, largest: int, value: float) -> dict:
    """``bootstrap_statistic`` of an FID when every set has at most ``BOOTSTRAP_MAX_IMAGES`` images (100
    draws cost about 1.5 s at N = 150 on 2 CPU cores); above that each draw forms D x D covariances and
    the record says it was skipped."""
    if largest > BOOTSTRAP_MAX_IMAGES:
        return {"bootstrap_resamples": 0}
    return bootstrap_statistic(statistic, n, value)


# --------------------------------------------------------------- protocol-dependent statistics
def protocol_kid(fake, real, protocol: FidelityProtocol) -> tuple[float, float]:
    return kid_from_features(fake, real, subsets=protocol.kid_subsets, subset_size=protocol.kid_subset_size,
                             seed=protocol.kid_seed)


def protocol_precision_recall(real, fake, protocol: FidelityProtocol) -> tuple[float, float]:
    if protocol.pr_distances == "adm-float16":
        return adm_precision_recall(real, fake, protocol.pr_k)
    return precision_recall(real, fake, protocol.pr_k)


def protocol_density_coverage(real, fake, protocol: FidelityProtocol) -> tuple[float, float]:
    return density_coverage(real, fake, protocol.dc_k)


def protocol_inception_score(logits, protocol: FidelityProtocol) -> tuple[float, float]:
    if protocol.is_split_size is not None:
        return adm_inception_score(logits, protocol.is_split_size)
    return inception_score(logits, protocol.is_splits, protocol.is_seed)


# --------------------------------------------------------------- generation (gFID and company)
GENERATION_METRICS = ("gfid", "gkid", "precision", "recall", "inception_score")      # the default ones
ALL_GENERATION_METRICS = (*GENERATION_METRICS, "sfid", "density", "coverage")


@dataclass
class ReferenceSet:
    """What generated samples are compared with: the reference images' features and, where a reference
    batch ships them (ADM's .npz), the precomputed FID statistics of the whole dataset ((mu, sigma) of pool3
    and of the spatial features), which FID and sFID then use instead of the images' own."""
    features: InceptionFeatures
    stats: tuple[torch.Tensor, torch.Tensor] | None = None
    spatial_stats: tuple[torch.Tensor, torch.Tensor] | None = None
    source: str = ""

    def fid(self, samples: torch.Tensor) -> float:
        if self.stats is None:
            return fid_from_features(self.features.pool3, samples)
        return fid_against_stats(samples, *self.stats)

    def sfid(self, samples: torch.Tensor) -> float:
        if self.spatial_stats is not None:
            return fid_against_stats(samples, *self.spatial_stats)
        if self.features.spatial is None:
            raise VQBenchError(f"sFID needs the spatial features of the reference {self.source or 'images'}")
        return fid_from_features(self.features.spatial, samples)


def check_generation_metrics(metrics, protocol: FidelityProtocol) -> None:
    known = ALL_GENERATION_METRICS
    unknown = sorted(set(metrics) - set(known))
    if unknown:
        raise VQBenchError(f"unknown generation metrics {', '.join(unknown)}; choose from {', '.join(known)}")
    check_defined(protocol, metrics)


def generation_fidelity(sample_features: InceptionFeatures, reference: InceptionFeatures | ReferenceSet,
                        metrics: tuple[str, ...] = GENERATION_METRICS,
                        protocol: FidelityProtocol | None = None) -> dict[str, tuple[float, str]]:
    """``{name: (value, reason)}`` for the wanted ``metrics`` of generated samples against a reference set
    under ``protocol`` (KID and IS also give their standard deviation over subsets / splits, ``gkid_std``
    and ``inception_score_std``). The reason is "" unless the value is NaN (IS without the Inception
    classifier; ADM's IS spread with a single split)."""
    protocol = protocol or get_protocol(DEFAULT_PROTOCOL)
    check_generation_metrics(metrics, protocol)
    ref = reference if isinstance(reference, ReferenceSet) else ReferenceSet(reference)
    s, r = sample_features.pool3, ref.features.pool3
    out: dict[str, tuple[float, str]] = {}
    if "gfid" in metrics:
        out["gfid"] = (ref.fid(s), "")
    if "sfid" in metrics:
        if sample_features.spatial is None:
            raise VQBenchError("sFID needs the samples' spatial features (a protocol with sfid, e.g. adm)")
        out["sfid"] = (ref.sfid(sample_features.spatial), "")
    if "gkid" in metrics:
        mean, std = protocol_kid(s, r, protocol)
        out["gkid"], out["gkid_std"] = (mean, ""), (std, "")
    if "precision" in metrics or "recall" in metrics:
        precision, recall = protocol_precision_recall(r, s, protocol)
        out.update({m: (v, "") for m, v in (("precision", precision), ("recall", recall)) if m in metrics})
    if "density" in metrics or "coverage" in metrics:
        density, coverage = protocol_density_coverage(r, s, protocol)
        out.update({m: (v, "") for m, v in (("density", density), ("coverage", coverage)) if m in metrics})
    if "inception_score" in metrics:
        if sample_features.logits is not None:
            mean, std = protocol_inception_score(sample_features.logits, protocol)
            out["inception_score"] = (mean, "")
            out["inception_score_std"] = (std, "" if std == std else
                                          f"one split: {protocol.name} splits every {protocol.is_split_size} samples")
        else:
            out["inception_score"] = out["inception_score_std"] = (math.nan, classifier_unavailable_reason())
    return out


# --------------------------------------------------------------- streaming metrics (tokenizer evaluation)
class _ImageSetFeatures:
    """The features of one image field seen so far, with the image ids (and, for reals, pixel hashes)."""

    def __init__(self, pool3_dim: int = POOL3_DIM):
        self.parts, self.ids, self.hashes = [], [], []
        self.pool3_dim = pool3_dim           # a rank without batches gathers rows of the protocol's width

    def add(self, feats: InceptionFeatures, ids: torch.Tensor, hashes: torch.Tensor | None) -> None:
        self.parts.append(feats)
        self.ids.append(ids.cpu().long())
        if hashes is not None:
            self.hashes.append(hashes)

    def _gathered_field(self, name: str, width: int) -> torch.Tensor | None:
        """Every rank's ``name`` features, or None when no rank has them (a rank without batches agrees)."""
        have = [getattr(p, name) is not None for p in self.parts]
        present = _any_rank(any(have))
        if _any_rank(present and not all(have)):          # every rank raises together (no rank left waiting)
            raise VQBenchError(f"Inception metrics got batches with and without {name} features")
        if not present:
            return None
        local = [getattr(p, name) for p in self.parts]
        return gather_rows(_cat(local, (0, local[0].shape[1] if local else width), torch.float32))

    def gathered(self) -> tuple[InceptionFeatures, torch.Tensor, torch.Tensor | None]:
        """All ranks' features ordered by image id. Every rank takes part in the same collectives, also
        one that saw no batch (more ranks than batches)."""
        has_hashes = _any_rank(bool(self.hashes))
        if has_hashes and len(self.hashes) != len(self.ids):
            raise VQBenchError("Inception metrics got batches with and without image hashes")
        ids = gather_rows(_cat(self.ids, (0,), torch.int64))
        pool3 = self._gathered_field("pool3", self.pool3_dim)
        logits = self._gathered_field("logits", NUM_LOGITS)
        spatial = self._gathered_field("spatial", SPATIAL_DIM)
        hashes = gather_rows(_cat(self.hashes, (0,), torch.int64)) if has_hashes else None
        check_distinct_ids(ids, "Inception metrics")
        order = ids.argsort()
        feats = InceptionFeatures(pool3 if pool3 is not None else torch.zeros(0, self.pool3_dim), logits, spatial)
        return feats.select(order), ids[order], None if hashes is None else hashes[order]


def _cat(parts: list, empty_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(empty_shape, dtype=dtype)


def _any_rank(flag: bool) -> bool:
    return bool(max_over_ranks(int(flag)))


class _InceptionMetric(Metric):
    """Keeps the Inception features of ``fields`` (shared per batch), gathers them in ``sync``. The
    evaluation protocol (``set_protocol``; default torch-fidelity) decides the features' input and the
    statistics; rows carry its name."""
    fields: ClassVar[tuple[str, ...]] = ("real", "reconstruction")
    feature_extractor = EXTRACTOR_NAME
    uses_protocol = True
    protocol = DEFAULT_PROTOCOL

    def __init__(self):
        super().__init__()
        self.fidelity = get_protocol(DEFAULT_PROTOCOL)
        self.reset()

    def set_protocol(self, protocol: FidelityProtocol) -> None:
        check_defined(protocol, [main_value(type(self))])
        protocol.check_available()
        self.fidelity, self.protocol = protocol, protocol.name
        self.feature_extractor = protocol.feature_input.extractor
        self._sets = {f: _ImageSetFeatures(protocol.feature_input.dim) for f in self.fields}

    @classmethod
    def protocol_outputs(cls, protocol: FidelityProtocol) -> tuple[str, ...]:
        """The values this metric emits under ``protocol`` (rFID emits no rKID under ADM); the metric's
        main value must be defined (``check_metrics``)."""
        check_defined(protocol, [main_value(cls)])
        return tuple(v for v in cls.higher_is_better if protocol.defines(v))

    def reset(self) -> None:
        super().reset()
        self.reasons = {}
        self._sets = {f: _ImageSetFeatures(self.fidelity.feature_input.dim) for f in self.fields}
        self._seen = 0
        self._dataset = None
        self._gathered = None

    def update(self, batch: EvalBatch) -> None:
        n = len(getattr(batch, self.fields[0]))
        ids = batch_image_ids(batch.image_ids, self._seen, n, f"metric {self.name!r}")
        self._seen += n
        self._dataset = batch.dataset
        for f in self.fields:
            # pixel hashes of real images let the split's features be cached for the next evaluation
            hashes = image_hashes(batch.real) if f == "real" and batch.dataset is not None else None
            self._sets[f].add(batch_features(batch, f, self.fidelity.feature_input), ids, hashes)

    def sync(self) -> None:
        self._gathered = {f: s.gathered() for f, s in self._sets.items()}

    def features(self, field: str) -> InceptionFeatures:
        if self._gathered is None:
            self.sync()
        feats, ids, hashes = self._gathered[field]
        if len(feats) == 0:
            raise VQBenchError(f"metric {self.name!r} saw no images")
        how = self.fidelity.feature_input
        if field == "real" and self._dataset is not None and hashes is not None and is_main_process():
            cached = cached_feature_set(self._dataset, how)
            if cached is None or not cached.serves(how):
                store_feature_set(self._dataset, ids, feats, hashes, how)
        return feats


@METRICS.register("rfid", description="rFID (and rKID where the protocol defines KID) between real images and "
                                      "their reconstructions, FID Inception pool3")
class ReconstructionFID(_InceptionMetric):
    name = "rfid"
    requires = frozenset({"real", "reconstruction"})
    higher_is_better = {"rfid": False, "rkid": False, "rkid_std": False}

    def compute(self) -> dict[str, float]:
        real, recon = self.features("real").pool3, self.features("reconstruction").pool3
        out = {"rfid": fid_from_features(real, recon)}
        # the images are pairs: a draw takes an image with its reconstruction
        self.value_extra = {"rfid": fid_bootstrap(lambda i: fid_from_features(real[i], recon[i]), len(real),
                                                  len(real), out["rfid"])}
        if self.fidelity.kid_subsets is not None:
            # KID's subset draws: reconstructions as set 1, reals as set 2 (torch-fidelity's input1/input2)
            out["rkid"], out["rkid_std"] = protocol_kid(recon, real, self.fidelity)
            self.value_extra |= dict.fromkeys(("rkid", "rkid_std"),
                                              kid_record(len(recon), len(real), self.fidelity.kid_subset_size))
        return out


@METRICS.register("precision-recall", description="precision and recall (k=3, Kynkaanniemi et al.) of "
                                                  "reconstructions against real images, Inception pool3")
class ReconstructionPrecisionRecall(_InceptionMetric):
    name = "precision-recall"
    requires = frozenset({"real", "reconstruction"})
    higher_is_better = {"precision": True, "recall": True}

    def compute(self) -> dict[str, float]:
        p, r = protocol_precision_recall(self.features("real").pool3, self.features("reconstruction").pool3,
                                         self.fidelity)
        return {"precision": p, "recall": r}


@METRICS.register("density-coverage", description="density and coverage (k=5, Naeem et al.) of reconstructions "
                                                  "against real images, on the protocol's features")
class ReconstructionDensityCoverage(_InceptionMetric):
    name = "density-coverage"
    requires = frozenset({"real", "reconstruction"})
    higher_is_better = {"density": True, "coverage": True}

    def compute(self) -> dict[str, float]:
        d, c = protocol_density_coverage(self.features("real").pool3, self.features("reconstruction").pool3,
                                         self.fidelity)
        return {"density": d, "coverage": c}


@METRICS.register("inception-score", description="Inception Score of the reconstructions (splits as the protocol "
                                                 "says); NaN with the reason without torch-fidelity's Inception classifier")
class ReconstructionIS(_InceptionMetric):
    name = "inception-score"
    requires = frozenset({"reconstruction"})
    fields = ("reconstruction",)
    higher_is_better = {"inception_score": True, "inception_score_std": False}

    def compute(self) -> dict[str, float]:
        out = generation_fidelity(self.features(self.fields[0]), InceptionFeatures(torch.zeros(0, POOL3_DIM)),
                                  ("inception_score",), self.fidelity)
        self.reasons = {name: reason for name, (_, reason) in out.items() if reason}
        return {name: value for name, (value, _) in out.items()}


# --------------------------------------------------------------- generation metrics (samples vs a reference set)
class _GenerationMetric(_InceptionMetric):
    """Streams the Inception features of generated ``samples``; ``compute`` compares them with
    ``self.reference`` (a ``ReferenceSet`` or the reference split's features, set by the generation
    evaluation before compute)."""
    fields = ("samples",)
    requires = frozenset({"samples", "reference"})

    def reset(self) -> None:
        super().reset()
        self.reference: InceptionFeatures | ReferenceSet | None = None

    def compute(self) -> dict[str, float]:
        if self.reference is None:
            raise VQBenchError(f"metric {self.name!r} compares samples with reference images; none were given")
        samples = self.features("samples")
        out = generation_fidelity(samples, self.reference, (self.name,), self.fidelity)
        out = {name: out[name] for name in self.higher_is_better if name in out}
        if self.name in ("gfid", "sfid"):       # the samples redrawn, the reference fixed
            ref = self.reference if isinstance(self.reference, ReferenceSet) else ReferenceSet(self.reference)
            def redrawn(i):
                return ref.fid(samples.pool3[i]) if self.name == "gfid" else ref.sfid(samples.spatial[i])
            largest = len(samples) if ref.stats is not None else max(len(samples), len(ref.features))
            self.value_extra = {self.name: fid_bootstrap(redrawn, len(samples), largest, out[self.name][0])}
        if self.name == "gkid":
            reference_n = len(self.reference.features if isinstance(self.reference, ReferenceSet) else self.reference)
            self.value_extra = dict.fromkeys(out, kid_record(len(samples.pool3), reference_n,
                                                             self.fidelity.kid_subset_size))
        self.reasons = {name: reason for name, (_, reason) in out.items() if reason}
        return {name: value for name, (value, _) in out.items()}


@METRICS.register("gfid", description="gFID: FID between generated samples and the reference images (or an ADM "
                                      "reference batch's statistics), Inception pool3")
class GenerationFID(_GenerationMetric):
    name = "gfid"
    higher_is_better = {"gfid": False}


@METRICS.register("sfid", description="sFID (Nash et al. 2021): FID of the spatial features mixed_6/conv (first 7 "
                                      "channels) of samples against the reference; protocol adm")
class GenerationSFID(_GenerationMetric):
    name = "sfid"
    higher_is_better = {"sfid": False}


@METRICS.register("gkid", description="gKID (100 subsets of min(1000, N)) between samples and the reference split")
class GenerationKID(_GenerationMetric):
    name = "gkid"
    higher_is_better = {"gkid": False, "gkid_std": False}


@METRICS.register("precision", description="precision (k=3, Kynkaanniemi et al.) of samples against the reference split")
class GenerationPrecision(_GenerationMetric):
    name = "precision"
    higher_is_better = {"precision": True}


@METRICS.register("recall", description="recall (k=3, Kynkaanniemi et al.) of samples against the reference split")
class GenerationRecall(_GenerationMetric):
    name = "recall"
    higher_is_better = {"recall": True}


@METRICS.register("density", description="density (k=5, Naeem et al.) of samples against the reference split: "
                                         "how many real neighbourhoods a sample lies in, / k (1 on average when "
                                         "the sets match)")
class GenerationDensity(_GenerationMetric):
    name = "density"
    higher_is_better = {"density": True}


@METRICS.register("coverage", description="coverage (k=5, Naeem et al.) of samples against the reference split: the "
                                          "share of real neighbourhoods holding a sample")
class GenerationCoverage(_GenerationMetric):
    name = "coverage"
    higher_is_better = {"coverage": True}


@METRICS.register("inception_score", description="Inception Score of the samples (splits as the protocol says); "
                                                 "NaN with the reason without torch-fidelity's Inception classifier")
class GenerationIS(ReconstructionIS):
    """The reconstruction IS computed on the samples: IS needs no reference set."""
    name = "inception_score"
    requires = frozenset({"samples"})
    fields = ("samples",)
