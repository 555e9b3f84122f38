"""Registries: one per kind of thing, filled by decorators, looked up by name.

Each entry carries free-form metadata (e.g. ``scale="tiny"`` for test presets) that tests and the
CLI use; duplicate names are an error and unknown names suggest the closest registered ones.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.core.errors import VQBenchError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    meta: dict = field(default_factory=dict)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **meta) -> Callable:
        def decorator(obj):
            self.add(name, obj, **meta)
            return obj
        return decorator

    def add(self, name: str, obj: Any, **meta) -> None:
        if name in self._entries:
            raise VQBenchError(f"duplicate {self.kind} name {name!r}: it is already registered "
                               f"by {_origin(self._entries[name].obj)}")
        self._entries[name] = Entry(name, obj, meta)

    @staticmethod
    def _filled() -> None:
        """Lookups see every built-in module and plugin file, whatever the caller imported first."""
        from harness.models.catalog import load_all
        load_all()

    def entry(self, name: str) -> Entry:
        self._filled()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise VQBenchError(f"unknown {self.kind} {name!r}{hint} "
                               f"(`vqbench list {self.kind}s` shows all)") from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self, **meta_filter) -> list[str]:
        self._filled()
        return [n for n, e in self._entries.items()
                if all(e.meta.get(k) == v for k, v in meta_filter.items())]

    def entries(self) -> list[Entry]:
        self._filled()
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        self._filled()
        return name in self._entries

    def __len__(self) -> int:
        self._filled()
        return len(self._entries)


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


TOKENIZERS = Registry("tokenizer")
GENERATORS = Registry("generator")
METRICS = Registry("metric")
DATASETS = Registry("dataset")
SUITES = Registry("suite")
FEATURE_EXTRACTORS = Registry("feature extractor")
TEXT_ENCODERS = Registry("text encoder")

ALL = {"tokenizers": TOKENIZERS, "generators": GENERATORS, "metrics": METRICS,
       "datasets": DATASETS, "suites": SUITES, "feature-extractors": FEATURE_EXTRACTORS,
       "text-encoders": TEXT_ENCODERS}
