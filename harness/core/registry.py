"""Registries: one per kind of thing, filled by the files that define the things, looked up by name.

A file registers a thing with ``@TOKENIZERS.register("vq-tiny", family="vq", scale="tiny", description=...)``
(or ``TOKENIZERS.add(name, obj, ...)``); the keywords build that registry's typed record
(``TokenizerInfo`` here), so an unknown or missing field is an error that names the field and the entry.
Files are found by harness.core.discovery, never listed. Duplicate names are an error and unknown
names suggest the closest registered ones.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

from harness.core.discovery import load_all
from harness.core.errors import VQBenchError
from harness.core.recipes import Recipe

SCALES = ("tiny", "small", "paper")
LAYOUT_KINDS = ("spatial", "channel", "latent", "factorized")


@dataclass(frozen=True, kw_only=True)
class Info:
    """Registration metadata every kind carries: the one-line description ``vqbench list`` prints.

    Read fields as attributes; ``get``/``in``/``[]`` also work (``"f" in info`` means the field is set,
    i.e. not None) and reject a name that is not a field, so a misspelt read fails as loudly as a
    misspelt registration.
    """
    description: str

    def get(self, name: str, default: Any = None) -> Any:
        value = self[name]
        return default if value is None else value

    def __getitem__(self, name: str) -> Any:
        if name not in self.field_names():
            raise KeyError(f"{type(self).__name__} has no field {name!r} (fields: {', '.join(self.field_names())})")
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        return name in self.field_names() and getattr(self, name) is not None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def required_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise VQBenchError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")


def _check_recipe(recipe) -> None:
    if not isinstance(recipe, Recipe):
        raise VQBenchError(f"recipe must be a harness.core.recipes.Recipe (Recipe.of(...)), "
                           f"got {type(recipe).__name__}")


@dataclass(frozen=True, kw_only=True)
class TokenizerInfo(Info):
    """A tokenizer preset.

    ``family`` groups presets of one method (vq, cvq, fq, vcq, fsq, ...); ``scale`` is "tiny" (seconds,
    unit tests), "small" (Fashion-MNIST runs) or "paper" (the paper's setting, built on the meta device
    by the contract tests); ``paper_params`` is the parameter count the paper states, checked within 3%;
    ``recipe`` is the paper's training recipe (harness.core.recipes), each value with its source,
    applied before the user's ``--set``.
    """
    family: str
    scale: str
    paper_params: float | None = None
    recipe: Recipe = Recipe()

    def __post_init__(self):
        _check_scale(self.scale)
        _check_recipe(self.recipe)


@dataclass(frozen=True, kw_only=True)
class GeneratorInfo(Info):
    """A generator preset.

    ``family`` (ar, car, far, masked, ...) is also the generator class's ``family``; ``scale`` is "tiny" |
    "small" | "paper". ``layouts`` are the layout kinds the family supports, the one declaration that
    ``Generator.__init__`` checks every build against: a tuple of "spatial", "channel", "latent" (one
    code per position; "latent" presets are also tested on a variable K_t layout) or ("factorized",)
    (k sub-codes per position, FQGAN). ``kv_cache=True`` when ``SamplerConfig.kv_cache`` switches an
    incremental path (tested against full recomputation). Paper presets add ``paper_layout`` (a
    TokenLayout) and ``paper_conditioning`` (a Conditioning) to build on the meta device,
    ``paper_codebook_dim`` where the paper's code vectors enter the generator (CAR), and, where the
    count is matched within 3%, ``paper_params`` (whole model) or ``paper_body_params`` (without the
    codebook-sized embedding and head, as MaskGIT-style papers count). ``recipe``: the paper's training
    recipe, as for tokenizers.
    """
    family: str
    scale: str
    layouts: tuple[str, ...]
    kv_cache: bool = False
    paper_layout: Any = None
    paper_conditioning: Any = None
    paper_codebook_dim: int | None = None
    paper_params: float | None = None
    paper_body_params: float | None = None
    recipe: Recipe = Recipe()

    def __post_init__(self):
        _check_scale(self.scale)
        _check_recipe(self.recipe)
        object.__setattr__(self, "layouts", tuple(self.layouts))
        unknown = [k for k in self.layouts if k not in LAYOUT_KINDS]
        if not self.layouts or unknown:
            raise VQBenchError(f"layouts must be a non-empty tuple of {', '.join(LAYOUT_KINDS)}, "
                               f"got {self.layouts!r}")


@dataclass(frozen=True, kw_only=True)
class MetricInfo(Info):
    """A metric: the description says what is computed and under which protocol."""


@dataclass(frozen=True, kw_only=True)
class DatasetInfo(Info):
    """A dataset; the description gives its size, classes and the ``name:<root>`` argument it takes."""


@dataclass(frozen=True, kw_only=True)
class SuiteInfo(Info):
    """A suite of runs (harness.suites.Suite)."""


@dataclass(frozen=True, kw_only=True)
class FeatureExtractorInfo(Info):
    """A frozen feature network (teacher or FID/IS backbone).

    ``dim``: its feature channels, when known without building it; ``takes_argument``: it is built
    from ``name:<argument>`` (weights the user provides).
    """
    dim: int | None = None
    takes_argument: bool = False


@dataclass(frozen=True, kw_only=True)
class TextEncoderInfo(Info):
    """A frozen text encoder; ``dim`` and ``takes_argument`` as in FeatureExtractorInfo."""
    dim: int | None = None
    takes_argument: bool = False


@dataclass(frozen=True, kw_only=True)
class EvaluationInfo(Info):
    """An evaluation of a run (harness.evaluation.recording.Evaluation); ``run_kind``: the kind of run
    it applies to ("tokenizer" or "generator")."""
    run_kind: str


@dataclass(frozen=True, kw_only=True)
class ProtocolInfo(Info):
    """An evaluation protocol of the Inception metrics (harness.evaluation.protocols.FidelityProtocol);
    ``reproduces`` names the evaluator and the paper columns it reproduces."""
    reproduces: str


@dataclass(frozen=True, kw_only=True)
class ClaimInfo(Info):
    """A paper's claim as a registered experiment (harness.claims.claim.Claim); the description is its
    statement."""


@dataclass(frozen=True, kw_only=True)
class TrackInfo(Info):
    """A leaderboard track (harness.leaderboard.tracks.Track): a frozen setting whose entries are
    comparable by construction; the description names its data, token budget and protocol."""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    meta: Info


class Registry:
    def __init__(self, kind: str, info: type[Info]):
        self.kind = kind
        self.info = info
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **fields) -> Callable:
        info = self._record(name, fields)       # checked here, so a bad field fails at the decorator line

        def decorator(obj):
            self._add(Entry(name, obj, info))
            return obj
        return decorator

    def add(self, name: str, obj: Any, **fields) -> None:
        self._add(Entry(name, obj, self._record(name, fields)))

    def _add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            raise VQBenchError(f"duplicate {self.kind} name {entry.name!r}: it is already registered "
                               f"by {_origin(self._entries[entry.name].obj)}")
        self._entries[entry.name] = entry

    def _record(self, name: str, fields: dict) -> Info:
        unknown = [f for f in fields if f not in self.info.field_names()]
        missing = [f for f in self.info.required_names() if f not in fields]
        problems = [f"unknown field {f!r}{_suggestion(f, self.info.field_names())}" for f in unknown]
        problems += [f"missing field {f!r}" for f in missing]
        if problems:
            raise VQBenchError(f"{self.kind} {name!r}: {'; '.join(problems)} "
                               f"({self.info.__name__} fields: {', '.join(self.info.field_names())})")
        try:
            return self.info(**fields)
        except VQBenchError as e:
            raise VQBenchError(f"{self.kind} {name!r}: {e}") from None

    def entry(self, name: str) -> Entry:
        load_all()
        try:
            return self._entries[name]
        except KeyError:
            raise VQBenchError(f"unknown {self.kind} {name!r}{_suggestion(name, list(self._entries))} "
                               f"(`vqbench list {self.kind}s` shows all)") from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def build_from_spec(self, spec: str) -> Any:
        """``name`` -> the entry built without arguments; ``name:argument`` -> built from the argument
        (entries registered with ``takes_argument``, e.g. a weights file the user provides)."""
        name, _, arg = spec.partition(":")
        entry = self.entry(name)
        if entry.meta.get("takes_argument"):
            return entry.obj(arg)
        if arg:
            raise VQBenchError(f"{self.kind} {name!r} takes no argument (got {spec!r})")
        return entry.obj()

    def names(self, **field_filter) -> list[str]:
        """Names whose record has every given field equal to the given value (``names(scale="tiny")``)."""
        load_all()
        for f in field_filter:
            if f not in self.info.field_names():
                raise VQBenchError(f"{self.info.__name__} has no field {f!r}{_suggestion(f, self.info.field_names())}")
        return [n for n, e in self._entries.items()
                if all(getattr(e.meta, f) == v for f, v in field_filter.items())]

    def entries(self) -> list[Entry]:
        load_all()
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        load_all()
        return name in self._entries

    def __len__(self) -> int:
        load_all()
        return len(self._entries)


def preset_entry(name: str) -> tuple["Registry", Entry]:
    """(registry, entry) of a tokenizer or generator preset; an unknown name suggests the closest of both."""
    for reg in (TOKENIZERS, GENERATORS):
        if name in reg:
            return reg, reg.entry(name)
    names = [e.name for reg in (TOKENIZERS, GENERATORS) for e in reg.entries()]
    raise VQBenchError(f"unknown preset {name!r}{_suggestion(name, names)} (`vqbench list tokenizers` and "
                       "`vqbench list generators` show all)")


def _suggestion(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


TOKENIZERS = Registry("tokenizer", TokenizerInfo)
GENERATORS = Registry("generator", GeneratorInfo)
METRICS = Registry("metric", MetricInfo)
DATASETS = Registry("dataset", DatasetInfo)
SUITES = Registry("suite", SuiteInfo)
FEATURE_EXTRACTORS = Registry("feature extractor", FeatureExtractorInfo)
TEXT_ENCODERS = Registry("text encoder", TextEncoderInfo)
EVALUATIONS = Registry("evaluation", EvaluationInfo)
PROTOCOLS = Registry("protocol", ProtocolInfo)
CLAIMS = Registry("claim", ClaimInfo)
TRACKS = Registry("track", TrackInfo)
DEFAULT_PROTOCOL = "torch-fidelity"        # the evaluation protocol Inception metrics follow unless told

ALL = {"tokenizers": TOKENIZERS, "generators": GENERATORS, "metrics": METRICS,
       "datasets": DATASETS, "suites": SUITES, "feature-extractors": FEATURE_EXTRACTORS,
       "text-encoders": TEXT_ENCODERS, "evaluations": EVALUATIONS, "protocols": PROTOCOLS,
       "claims": CLAIMS, "tracks": TRACKS}


def check_generator_layout(family: str, layout) -> None:
    """Raises unless generator ``family``'s presets declare ``layout``'s kind in ``GeneratorInfo.layouts``.

    The kind is "factorized" for k > 1 sub-codes per position, else the layout's ``position_kind``.
    """
    declared = {e.meta.layouts for e in GENERATORS.entries() if e.meta.family == family}
    if not declared:
        raise VQBenchError(f"no generator preset is registered with family {family!r}: set the Generator "
                           "subclass's `family` to the family its presets register")
    if len(declared) > 1:
        raise VQBenchError(f"the presets of generator family {family!r} declare different layouts "
                           f"{sorted(declared)}; a family supports one set of layout kinds")
    supported = declared.pop()
    kind = "factorized" if layout.num_factors > 1 else layout.position_kind
    if kind not in supported:
        raise VQBenchError(f"the {family} generator supports {', '.join(supported)} token layouts, not {kind} "
                           f"(this layout has num_factors={layout.num_factors}, position_kind="
                           f"{layout.position_kind!r}); pair it with another tokenizer")
