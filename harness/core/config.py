"""Typed configuration: presets are dataclass instances, overrides are ``key=value`` strings.

``apply_overrides(cfg, ["lr=3e-4", "ch_mult=1,2,2"])`` parses each value by the field's declared
type (int, float, bool, str, Literal choices, tuple of ints/floats) and returns a new instance; unknown
keys suggest close matches, malformed values name the key and the expected type.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from typing import Any, Literal

from harness.core.errors import VQBenchError

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_value(key: str, raw: str, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):          # X | None
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        return parse_value(key, raw, next(a for a in args if a is not type(None)))
    if origin is Literal:
        choices = [str(a) for a in args]
        if raw not in choices:
            raise VQBenchError(f"--set {key}={raw}: expected one of {', '.join(choices)}")
        return args[choices.index(raw)]
    if origin is tuple:
        elem = args[0] if args else str
        parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(parse_value(key, p.strip(), elem) for p in parts)
    if tp is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise VQBenchError(f"--set {key}={raw}: expected a boolean (true/false)")
    if tp in (int, float, str):
        try:
            value = tp(raw)
        except ValueError:
            raise VQBenchError(f"--set {key}={raw}: expected {tp.__name__}") from None
        if tp is int and str(value) != raw.strip().lstrip("+"):
            raise VQBenchError(f"--set {key}={raw}: expected int")
        # no setting of any preset means something when NaN, infinite or (for counts, sizes, steps,
        # seeds) negative; the configs' own checks add the positive-only ones
        if tp is float and not math.isfinite(value):
            raise VQBenchError(f"--set {key}={raw}: expected a finite number")
        if tp is int and value < 0:
            raise VQBenchError(f"--set {key}={raw}: expected a non-negative integer")
        return value
    raise VQBenchError(f"--set {key}: fields of type {tp} cannot be set from the command line")


def split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise VQBenchError(f"--set {item!r}: expected key=value, e.g. --set lr=3e-4")
    key, raw = item.split("=", 1)
    return key.strip(), raw.strip()


def field_types(cfg) -> dict[str, Any]:
    hints = typing.get_type_hints(type(cfg))
    return {f.name: hints[f.name] for f in dataclasses.fields(cfg)}


def apply_overrides(cfg, items: dict[str, str]):
    """Return a copy of dataclass ``cfg`` with ``items`` (key -> raw string) parsed and applied."""
    types_ = field_types(cfg)
    changes = {}
    for key, raw in items.items():
        if key not in types_:
            raise VQBenchError(unknown_key_message(key, list(types_)))
        changes[key] = parse_value(key, raw, types_[key])
    return dataclasses.replace(cfg, **changes)


def unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"--set {key}: unknown setting{hint} (`vqbench train PRESET --help-settings` lists them)"


def split_overrides(items: list[str], *configs) -> list[dict[str, str]]:
    """Route each ``key=value`` to the first config that has the field; unknown keys are an error."""
    routed: list[dict[str, str]] = [{} for _ in configs]
    known = [set(field_types(c)) for c in configs]
    for item in items:
        key, raw = split_override(item)
        for i, names in enumerate(known):
            if key in names:
                routed[i][key] = raw
                break
        else:
            raise VQBenchError(unknown_key_message(key, sorted(set().union(*known))))
    return routed


def to_dict(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def non_default(cfg) -> dict:
    """The fields of ``cfg`` that differ from the dataclass defaults."""
    default = to_dict(type(cfg)())
    return {k: v for k, v in to_dict(cfg).items() if v != default[k]}


def config_hash(*cfgs) -> str:
    """Hash of what each config sets away from its defaults: adding a field (with a default) in a
    later version leaves existing runs' hashes, and so their resumability, intact."""
    blob = json.dumps([[type(c).__name__, non_default(c)] for c in cfgs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
