"""The one evaluation-and-recording pipeline: load a run once, run its evaluations, write their rows.

Every analysis of a run (image and token metrics, Inception metrics, progressive curves, linear
probes, entropy curves, generation metrics) is an ``Evaluation`` registered in ``EVALUATIONS``. It
declares

- ``settings(run)``: what identifies its rows besides their metric and k (dataset, split, N and any
  parameter that changes a value); stored in every row's ``extra["evaluation"]``,
- ``yields(run)``: the ``(metric, k)`` keys of the rows it produces (k is None for scalar rows),
- ``measure(run, d, todo)``: the ``Measurement`` of (at least) the keys in ``todo``.

``record`` applies the one skip rule (a key is done when the store holds its row for the same run,
configuration hash, checkpoint step, dataset, split and settings) and the one replacement rule (a new row replaces the
run's stored row of the same dataset, split, metric and k, whatever its settings; everything else of the
run stays), and builds every row through ``make_rows`` with the run's self-description
(``extra["run_info"]``: token count, factors, codebook size per position, bits per image, parameters).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from harness.core import checkpoint as ckpt
from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.core.registry import EVALUATIONS
from harness.core.results import ResultsStore, check_extra, make_rows, now, row_extra

RowKey = tuple[str, "int | None"]


@dataclass
class LoadedRun:
    """A checkpoint loaded once for all of its evaluations (a generator run carries its tokenizer)."""
    run_id: str
    path: Path                  # the checkpoint folder
    state: dict
    model: object               # the Tokenizer or Generator
    tokenizer: object           # the model itself for a tokenizer run
    tokenizer_state: dict
    tokenizer_path: Path

    @property
    def kind(self) -> str:
        return self.state["kind"]

    @property
    def dataset(self) -> str:
        return self.state["data"]["dataset"]

    @property
    def resolution(self) -> int:
        return self.tokenizer.resolution

    @property
    def channels(self) -> int:
        return self.tokenizer.in_channels

    def info(self) -> dict:
        """The run's self-description, stored with every row (figures and reports read it, never a model)."""
        return run_info(self.tokenizer, self.model, self.tokenizer_state)


def run_info(tokenizer, model, tokenizer_state: dict) -> dict:
    """The tokenizer's own layout, also for a generator that read its factors as positions (then flagged)."""
    from harness.models.factor_positions import FactorsAsPositions
    as_positions = isinstance(tokenizer, FactorsAsPositions)
    native = tokenizer.inner if as_positions else tokenizer
    layout = native.layout
    sizes = [int(k) for k in layout.codebook_sizes]
    schedule = getattr(native.cfg, "schedule", None)
    return {"tokenizer_preset": tokenizer_state["preset"], "tokens": layout.num_positions,
            "factors": layout.num_factors, "position_kind": layout.position_kind,
            "codebook_size": max(sizes), "codebook_sizes": sizes[0] if len(set(sizes)) == 1 else sizes,
            "codebook_schedule": schedule if isinstance(schedule, str) else "constant",
            "bits_per_image": round(layout.bits_per_image, 4),
            "parameters": sum(p.numel() for p in model.parameters())} | ({"factors_as_positions": True}
                                                                        if as_positions else {})


def load_run(checkpoint: str | Path, device, run_id: str | None = None) -> LoadedRun:
    """Load a tokenizer or generator checkpoint (a run folder: its latest checkpoint)."""
    from harness.models.checkpoints import load_pair, load_tokenizer
    path = ckpt.resolve(checkpoint)
    kind = ckpt.load_state(path).get("kind")
    run_id = run_id or path.parent.parent.name
    if kind == "tokenizer":
        model, state, path = load_tokenizer(path, device)
        return LoadedRun(run_id, path, state, model, model, state, path)
    if kind == "generator":
        generator, state, tokenizer, tok_state, tok_path = load_pair(path, device)
        return LoadedRun(run_id, path, state, generator, tokenizer, tok_state, tok_path)
    raise VQBenchError(f"{checkpoint} is neither a tokenizer nor a generator checkpoint (kind={kind!r})")


@dataclass(frozen=True)
class Measurement:
    """One value an evaluation measured; ``record`` turns it into a results row."""
    metric: str
    value: float
    higher_is_better: bool
    n_images: int
    protocol: str = "canonical"
    feature_extractor: str = ""
    k: int | None = None
    reason: str = ""                            # why the value is NaN, when it is
    extra: dict = field(default_factory=dict)   # evaluation-specific row details (schema: harness.core.results)


class Evaluation(ABC):
    """One analysis of a run; see the module docstring. Subclasses are frozen dataclasses of their settings."""
    name: ClassVar[str]
    kind: ClassVar[str] = "tokenizer"           # the run kind it applies to

    def dataset_of(self, run: LoadedRun) -> str:
        return getattr(self, "dataset", None) or run.dataset

    @property
    def row_split(self) -> str:
        return self.split

    @abstractmethod
    def settings(self, run: LoadedRun) -> dict:
        ...

    @abstractmethod
    def yields(self, run: LoadedRun) -> set[RowKey]:
        ...

    @abstractmethod
    def measure(self, run: LoadedRun, d: Dist, todo: set[RowKey]) -> list[Measurement]:
        ...


def register_evaluation(cls: type[Evaluation]) -> type[Evaluation]:
    EVALUATIONS.add(cls.name, cls, run_kind=cls.kind, description=(cls.__doc__ or "").strip().split("\n")[0])
    return cls


def _key(row: dict) -> RowKey:
    return row["metric"], row_extra(row).get("k")


def stored_rows(store: ResultsStore, run: LoadedRun, evaluation: Evaluation) -> list[dict]:
    """The run's stored rows of this evaluation at the same configuration, checkpoint step, data and
    settings."""
    settings = evaluation.name, evaluation.settings(run)
    data = evaluation.dataset_of(run), evaluation.row_split
    out = []
    for r in store.records():
        if r["run_id"] != run.run_id or r["config_hash"] != run.state["config_hash"] or \
                (r["dataset"], r["split"]) != data:
            continue
        extra = row_extra(r)
        if extra.get("checkpoint_step") == run.state["step"] and \
                (extra.get("evaluation"), extra.get("settings")) == settings:
            out.append(r)
    return out


def record(run: LoadedRun, evaluations: Iterable[Evaluation], store: ResultsStore, d: Dist,
           skip_recorded: bool = True) -> list[dict]:
    """Run each evaluation on ``run`` (only the keys not yet stored, with ``skip_recorded``); rank 0 writes.

    Returns the rows of every requested key (stored or new); non-main ranks return [] for evaluations
    that only rank 0 finishes (probes)."""
    rows: list[dict] = []
    for ev in evaluations:
        if ev.kind != run.kind:
            raise VQBenchError(f"evaluation {ev.name!r} applies to {ev.kind} runs; {run.run_id} is a {run.kind} run")
        wanted = ev.yields(run)
        stored = [r for r in stored_rows(store, run, ev) if _key(r) in wanted] if skip_recorded else []
        todo = wanted - {_key(r) for r in stored}
        if not todo:
            rows += stored
            continue
        started, t0 = now(), time.time()
        measured = ev.measure(run, d, todo)
        new = build_rows(run, ev, measured, started=started, seconds=time.time() - t0, world_size=d.world_size)
        if d.is_main:
            replace_rows(store, run.run_id, new)
        new_keys = {_key(n) for n in new}
        rows += [r for r in stored if _key(r) not in new_keys] + new
    return rows


def build_rows(run: LoadedRun, ev: Evaluation, measured: Sequence[Measurement], *, started: str,
               seconds: float, world_size: int) -> list[dict]:
    """The results rows of one evaluation's measurements: the one place rows are built."""
    columns = {"run_id": run.run_id, "kind": run.kind, "model": run.model.family, "preset": run.state["preset"],
               "config_hash": run.state["config_hash"], "dataset": ev.dataset_of(run), "split": ev.row_split,
               "resolution": run.resolution, "seed": _seed(run, ev), "started_at": started}
    common = {"evaluation": ev.name, "settings": ev.settings(run), "checkpoint_step": run.state["step"],
              "eval_seconds": round(seconds, 2), "world_size": world_size, "run_info": run.info()}
    rows = []
    for m in measured:
        extra = common | m.extra | ({"k": m.k} if m.k is not None else {})
        check_extra(extra, f"evaluation {ev.name!r}, metric {m.metric!r}")
        rows += make_rows(columns, {m.metric: m.value}, {m.metric: m.higher_is_better}, m.protocol,
                          n_images=m.n_images, feature_extractor=m.feature_extractor, extra=extra,
                          reasons={m.metric: m.reason} if m.reason else None)
    return rows


def _seed(run: LoadedRun, ev: Evaluation) -> int:
    # generation rows record the sampling seed; tokenizer rows the training seed
    return getattr(ev, "seed", None) if run.kind == "generator" else run.state["train_config"]["seed"]


def replace_rows(store: ResultsStore, run_id: str, rows: list[dict]) -> None:
    """Replace the run's stored rows of the same dataset, split, metric, k and protocol by ``rows``, in one
    write (rows of one metric under two evaluation protocols live side by side; Inception rows written
    before protocols existed count as torch-fidelity's: ``protocols.row_protocol``)."""
    from harness.evaluation.protocols import row_protocol
    keys = {(r["dataset"], r["split"], *_key(r), row_protocol(r)) for r in rows}
    store.replace_where(run_id, rows, lambda r: (r["dataset"], r["split"], *_key(r), row_protocol(r)) in keys)
