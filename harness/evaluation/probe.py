"""Linear probes on the first k tokens (VCQ paper, "Variable Codebook Size Quantization", Sec. 4.4).

Protocol (``PROTOCOL``, recorded in every row's ``extra``):

- features: ``Tokenizer.code_embeddings(indices)`` (N x T x D: the code vectors of an image's tokens;
  FQ concatenates its sub-codes per position, RVQ sums its levels, CVQ's are channel maps) of the first
  k tokens in sequence order (raster patches for VQ and the conv baselines, channels for CVQ, latent
  positions for VCQ, positions with all factors for FQ), mean-pooled over those k tokens, so every k
  gives a D-dimensional feature and the probes of different k have the same size;
- standardized per dimension with the training features' mean and standard deviation (a constant
  dimension is left unscaled);
- a multinomial logistic regression (a linear layer and softmax cross-entropy, mean over images,
  plus ``l2 / 2 * ||W||^2``; the bias is not penalized), fit full-batch by L-BFGS with strong-Wolfe
  line search from zero weights in float64: the objective is strictly convex, so the fit is
  deterministic and does not depend on an initialization or a learning-rate schedule;
- fit on ``n_train`` images of the training split (the dataset's fixed class-mixed subset), top-1 and
  top-5 accuracy on the test split.

``factor=f`` probes one sub-codebook of a factorized tokenizer (FQ): the features are the codes of
sub-codebook f only (``factor_code_embeddings``), rows named ``probe_top1_<k>_f<f>`` (FQGAN Fig. 4: is
the teacher-supervised sub-codebook the one that knows the class?).

k in {1, 10, all} by default (the paper reports 10 and all 256), clipped to T. Rows are named
``probe_top1_k1``, ``probe_top1_k10``, ``probe_top1_all`` (and ``probe_top5_...``) so the wide table shows
each as its own column. With 5 classes or fewer top-5 accuracy is 1 by definition and is stored as
missing, with the reason.

Under ``torchrun`` each rank encodes its shard of the images; the features are summed over ranks
(each image's row is filled by exactly one rank, so the sum is exact) and the probe is fit on rank 0
only, which writes the rows.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.core.contracts import Tokenizer
from harness.data.datasets import open_dataset
from harness.core.distributed import Dist, setup, shard_batches
from harness.core.errors import VQBenchError
from harness.core.results import ResultsStore
from harness.evaluation.recording import Evaluation, LoadedRun, Measurement, load_run, record, register_evaluation

DEFAULT_KS: tuple[int | None, ...] = (1, 10, None)    # None: all tokens
L2 = 1e-4
MAX_ITER = 1000
PROTOCOL = ("linear probe: code embeddings of the first k tokens mean-pooled, standardized with training "
            "statistics, multinomial logistic regression with L2 penalty (bias unpenalized), full-batch "
            "L-BFGS from zero in float64; fit on the training subset, top-1/top-5 on the test split")


# ---------------------------------------------------------------- features
def pooled_prefix_features(embeddings: torch.Tensor, ks: Iterable[int]) -> dict[int, torch.Tensor]:
    """``{k: N x D}``: the mean of the first k token embeddings (N x T x ...; trailing dims flattened)."""
    emb = embeddings.flatten(2) if embeddings.dim() > 3 else embeddings
    return {k: emb[:, :k].float().mean(1) for k in ks}


@torch.no_grad()
def extract_features(model: Tokenizer, dataset, ks: Sequence[int], batch_size: int, d: Dist,
                     factor: int | None = None) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Pooled prefix features ``{k: N x D}`` and labels (N) of every image of ``dataset``, on every rank;
    with ``factor``, of that sub-codebook's codes only."""
    embed = model.code_embeddings if factor is None else lambda idx: model.factor_code_embeddings(idx, factor)
    n = len(dataset)
    feats: dict[int, torch.Tensor] = {}
    labels = torch.zeros(n, dtype=torch.int64, device=d.device)
    for rows in shard_batches(n, batch_size, d):
        idx = torch.tensor(list(rows))
        real, y = dataset.batch(idx)
        pooled = pooled_prefix_features(embed(model.encode(real.to(d.device))), ks)
        for k, f in pooled.items():
            if k not in feats:
                feats[k] = torch.zeros(n, f.shape[1], dtype=f.dtype, device=d.device)
            feats[k][idx.to(d.device)] = f
        labels[idx.to(d.device)] = y.to(d.device)
    if d.enabled:
        # every rank needs the feature width to allocate before the sum; rank 0 always has a batch
        for k in ks:
            width = torch.tensor([feats[k].shape[1] if k in feats else 0], device=d.device)
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            if k not in feats:
                feats[k] = torch.zeros(n, int(width), device=d.device)
            dist.all_reduce(feats[k])
        dist.all_reduce(labels)
    return feats, labels          # on the evaluation device: the probe is fit there (a GPU for ImageNet)


# ---------------------------------------------------------------- the probe
@dataclass(frozen=True)
class LinearProbe:
    mean: torch.Tensor          # D, training-feature statistics
    std: torch.Tensor           # D
    weight: torch.Tensor        # D x C
    bias: torch.Tensor          # C
    iterations: int

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.to(self.weight) - self.mean) / self.std) @ self.weight + self.bias


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float = L2,
                     max_iter: int = MAX_ITER) -> LinearProbe:
    """Multinomial logistic regression on standardized ``x`` (N x D) for labels ``y`` (module docstring)."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise VQBenchError(f"a probe needs as many labels as features (got {x.shape[0]} and {y.shape[0]})")
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    z, y = (x - mean) / std, y.to(x.device).long()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, std, w.detach(), b.detach(), int(opt.state[w]["n_iter"]))


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top == labels.to(top.device)[:, None]).any(1).double().mean())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, *, l2: float = L2, max_iter: int = MAX_ITER) -> dict[str, float]:
    """Fit on (train_x, train_y), return ``{"top1", "top5", "iterations"}`` on the test features;
    ``top5`` is NaN with 5 classes or fewer (it would be 1 by definition)."""
    probe = fit_linear_probe(train_x, train_y, num_classes, l2=l2, max_iter=max_iter)
    logits = probe.logits(test_x)
    return {"top1": topk_accuracy(logits, test_y, 1),
            "top5": topk_accuracy(logits, test_y, 5) if num_classes > 5 else math.nan,
            "iterations": probe.iterations}


def binomial_stderr(accuracy: float, n: int) -> dict:
    """An accuracy's standard error over its n test images, each right or wrong: sqrt(p (1 - p) / n)."""
    if not math.isfinite(accuracy) or n < 1:
        return {}
    return {"stderr": math.sqrt(accuracy * (1 - accuracy) / n), "stderr_kind": "binomial"}


def prefix_names(ks: Iterable[int | None], total: int) -> dict[str, int]:
    """``{"k1": 1, "k10": 10, "all": T}``: requested prefix lengths clipped to T (None: all), by row
    suffix; a k reaching T is named ``all``."""
    out: dict[str, int] = {}
    for k in ks:
        k = total if k is None else int(k)
        if k < 1:
            raise VQBenchError(f"probe prefix lengths must be at least 1 (got {k})")
        k = min(k, total)
        out["all" if k == total else f"k{k}"] = k
    return dict(sorted(out.items(), key=lambda item: item[1]))


# ---------------------------------------------------------------- the registered evaluation
@register_evaluation
@dataclass(frozen=True)
class LinearProbes(Evaluation):
    """linear probes on the pooled code embeddings of the first k tokens (top-1 / top-5 on the test split)"""
    name = "probe"
    n_train: int | None = None
    n: int | None = None
    ks: tuple[int | None, ...] = DEFAULT_KS
    dataset: str | None = None
    train_split: str = "train"
    split: str = "test"
    l2: float = L2
    batch_size: int = 250
    factor: int | None = None           # one sub-codebook of a factorized tokenizer (module docstring)

    def settings(self, run: LoadedRun) -> dict:
        settings = {"split": self.split, "n": self.n, "train_split": self.train_split, "n_train": self.n_train,
                    "l2": self.l2}
        return settings if self.factor is None else settings | {"factor": self.factor}

    def _suffix(self) -> str:
        return "" if self.factor is None else f"_f{self.factor}"

    def yields(self, run: LoadedRun) -> set:
        names = prefix_names(self.ks, run.model.layout.num_positions)
        return {(f"probe_top{t}_{s}{self._suffix()}", k) for s, k in names.items() for t in (1, 5)}

    def measure(self, run: LoadedRun, d: Dist, todo: set) -> list[Measurement]:
        model, dataset = run.model, self.dataset_of(run)
        if self.factor is not None and not (0 <= self.factor < model.layout.num_factors
                                            and hasattr(model, "factor_code_embeddings")):
            raise VQBenchError(f"probe factor={self.factor}: run {run.run_id!r} has no sub-codebook {self.factor} "
                               f"to probe ({model.layout.num_factors} factor(s) per position; a factorized "
                               "tokenizer such as FQ exposes factor_code_embeddings)")
        names = prefix_names(self.ks, model.layout.num_positions)
        train_ds = open_dataset(dataset, self.train_split, resolution=run.resolution, channels=run.channels,
                                n=self.n_train)
        test_ds = open_dataset(dataset, self.split, resolution=run.resolution, channels=run.channels, n=self.n)
        num_classes = train_ds.num_classes
        if num_classes < 2:
            raise VQBenchError(f"dataset {dataset!r} has {num_classes} classes; a linear probe needs labelled "
                               "images (class folders)")
        ks_needed = sorted(set(names.values()))
        train_x, train_y = extract_features(model, train_ds, ks_needed, self.batch_size, d, self.factor)
        test_x, test_y = extract_features(model, test_ds, ks_needed, self.batch_size, d, self.factor)
        if not d.is_main:
            return []
        for what, y in (("training", train_y), ("test", test_y)):
            if y.min() < 0 or y.max() >= num_classes:
                raise VQBenchError(f"dataset {dataset!r} ({what} split) has labels outside 0..{num_classes - 1}; "
                                   "a linear probe needs labelled images (class folders)")
        unit = "channels" if model.prefix_unit == "channels" else "positions"   # FQ: positions with all factors
        out = []
        for suffix, k in names.items():
            acc = linear_probe(train_x[k], train_y, test_x[k], test_y, num_classes, l2=self.l2)
            extra = {"k_total": model.layout.num_positions, "unit": unit, "n_train": len(train_ds),
                     "train_split": self.train_split, "l2": self.l2, "lbfgs_iterations": acc["iterations"],
                     "feature_dim": int(train_x[k].shape[1]), "num_classes": num_classes, "probe": PROTOCOL}
            if self.factor is not None:
                extra["factor"] = self.factor
            out.append(Measurement(f"probe_top1_{suffix}{self._suffix()}", acc["top1"], True, len(test_ds), k=k,
                                   extra=extra | binomial_stderr(acc["top1"], len(test_ds))))
            out.append(Measurement(f"probe_top5_{suffix}{self._suffix()}", acc["top5"], True, len(test_ds), k=k,
                                   extra=extra | binomial_stderr(acc["top5"], len(test_ds)),
                                   reason=f"top-5 accuracy is 1 by definition with {num_classes} classes"
                                   if math.isnan(acc["top5"]) else ""))
        return out


def probe_and_record(checkpoint, store: ResultsStore, *, run_id: str | None, dataset: str | None,
                     n_train: int | None, n_eval: int | None, ks: Iterable[int | None] = DEFAULT_KS,
                     batch_size: int = 250, device: str = "auto", train_split: str = "train",
                     split: str = "test", l2: float = L2, skip_if_recorded: bool = True,
                     factor: int | None = None) -> list[dict]:
    """Linear probes on the first k tokens of a tokenizer checkpoint (with ``factor``, of that
    sub-codebook's codes only); rank 0 records one row per (k, top-1/top-5). Under ``torchrun`` the ranks
    share the encoding and rank 0 fits, writes and returns the rows (the others return [])."""
    d = setup(device)
    run = load_run(checkpoint, d.device, run_id)
    evaluation = LinearProbes(n_train, n_eval, tuple(ks), dataset, train_split, split, l2, batch_size, factor)
    rows = record(run, [evaluation], store, d, skip_recorded=skip_if_recorded)
    return rows if d.is_main else []
