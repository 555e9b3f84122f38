"""Published numbers as data: ``baselines/published.jsonl``, one record per number a seed paper reports
(its own models and the baselines its tables list), read and checked here.

A record names the model, the paper and table it was read from, the setting (dataset, split,
resolution, tokens, codebook, parameters, guidance scale), the metric and value, and the protocol it
was measured with: a protocol of vqbench where one matches, else the paper's own evaluation,
``as-published:<paper>`` (``PUBLISHED_PROTOCOLS``). Numbers are copied from the paper texts in
``../shared/papers`` digit for digit; ``note`` says what a reader needs (a percentage converted, rows
merged in the rendering and attributed by column order, a footnote mark).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from harness.core.errors import VQBenchError
from harness.core.io import file_error

PUBLISHED_FILE = Path(__file__).resolve().parents[2] / "baselines" / "published.jsonl"

PAPERS = {
    "cvq-car": "Channel-wise Vector Quantization (CVQ tokenizer, CAR generator)",
    "masked-channel": "Channel-wise quantization with masked generation",
    "fqgan": "Factorized Visual Tokenization and Generation (FQGAN, FAR)",
    "vcq": "Variable codebook quantization and the entropy cliff (VCQ)",
}
PUBLISHED_PROTOCOLS = {f"as-published:{paper}": f"as evaluated in {title}: the paper's own pipeline, not "
                                                 "re-measured by vqbench" for paper, title in PAPERS.items()}
# the metric names records use, with their direction (vqbench's metric value names)
METRIC_DIRECTIONS = {"rfid": False, "psnr": True, "ssim": True, "lpips": False, "codebook_usage": True,
                     "gfid": False, "inception_score": True, "precision": True, "recall": True, "geneval": True}


@dataclass(frozen=True)
class PublishedNumber:
    model: str
    paper: str
    table: str
    dataset: str
    split: str
    resolution: int | None
    tokens: int | None
    codebook: int | None
    parameters: str | None
    metric: str
    value: float
    cfg: float | None
    protocol: str
    note: str

    @property
    def higher_is_better(self) -> bool:
        return METRIC_DIRECTIONS[self.metric]


_TYPES = {"model": (str,), "paper": (str,), "table": (str,), "dataset": (str,), "split": (str,),
          "resolution": (int, type(None)), "tokens": (int, type(None)), "codebook": (int, type(None)),
          "parameters": (str, type(None)), "metric": (str,), "value": (int, float), "cfg": (int, float, type(None)),
          "protocol": (str,), "note": (str,)}


def known_protocols() -> set[str]:
    """Every protocol name a record may carry: vqbench's (its registered metrics' protocols, GenEval's)
    and the papers' own."""
    from harness.core.discovery import load_all
    from harness.core.registry import METRICS
    load_all()
    return {METRICS.get(n).protocol for n in METRICS.names()} | {"geneval"} | set(PUBLISHED_PROTOCOLS)


def parse_record(line: str, where: str, protocols: set[str]) -> PublishedNumber:
    """One line of the file as a ``PublishedNumber``; a one-line error naming ``where`` otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise VQBenchError(f"{where} is not valid JSON ({e.msg}); one object per line") from None
    if not isinstance(record, dict):
        raise VQBenchError(f"{where} is not a JSON object")
    names = [f.name for f in fields(PublishedNumber)]
    missing, extra = [n for n in names if n not in record], sorted(set(record) - set(names))
    if missing or extra:
        raise VQBenchError(f"{where}: " + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                                                 extra and f"unknown keys {', '.join(extra)}"])))
    for key, types in _TYPES.items():
        value = record[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise VQBenchError(f"{where}: {key} is {value!r}, not {' or '.join(t.__name__ for t in types)}")
    checks = [(record["paper"] in PAPERS, f"paper must be one of {', '.join(PAPERS)}"),
              (record["metric"] in METRIC_DIRECTIONS, f"metric must be one of {', '.join(METRIC_DIRECTIONS)}"),
              (record["protocol"] in protocols, f"protocol {record['protocol']!r} is not a vqbench protocol "
                                                "nor as-published:<paper>"),
              (bool(record["model"].strip()) and bool(record["table"].strip()), "model and table must be named"),
              (record["value"] == record["value"] and abs(record["value"]) != float("inf"), "value must be finite")]
    for ok, why in checks:
        if not ok:
            raise VQBenchError(f"{where}: {why}")
    return PublishedNumber(**record)


def load_published(path: Path | None = None) -> list[PublishedNumber]:
    """Every record of ``path`` (default: ``baselines/published.jsonl``), each checked."""
    path = Path(path or PUBLISHED_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise file_error(e, path, "read the published numbers from") from None
    except UnicodeDecodeError:
        raise VQBenchError(f"{path} is not UTF-8 text; one JSON object per line") from None
    protocols = known_protocols()
    return [parse_record(line, f"{path}:{number}", protocols)
            for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def select(records: list[PublishedNumber], *, paper: str | None = None, metric: str | None = None,
           model: str | None = None) -> list[PublishedNumber]:
    """The records of ``paper`` / ``metric`` whose model name contains ``model`` (case-insensitive)."""
    return [r for r in records if (paper is None or r.paper == paper) and (metric is None or r.metric == metric)
            and (model is None or model.lower() in r.model.lower())]
