"""Training recipes: the settings a paper trains a preset with, each with where the paper says so.

A preset registers ``recipe=Recipe.of(("lr", "2e-4", "FQGAN paper, Sec. 4.1"), ...)``: each value is a
training setting (a ``--set`` key and its value as the command line takes it) and its source, a paper
section or table, or ``assumed("why")`` where the paper does not state the value (its text never gives
it, or our copy lost the number). ``notes`` name what a paper's recipe has that the harness does not
model. The training loops apply a preset's recipe before the user's ``--set`` values, which win
(``with_overrides``); ``vqbench describe PRESET`` prints every value with its source. The papers'
recipes themselves are in harness/models/paper_recipes.py.

Papers give training lengths in epochs; recipes state steps, converted with ``imagenet_steps``:
ImageNet-1k's 1,281,167 training images in whole global batches per epoch (the last partial batch
dropped, as ``BatchOrder`` counts epochs).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import split_override
from harness.core.errors import VQBenchError

IMAGENET_TRAIN_IMAGES = 1_281_167

# settings that name one quantity: a user's --set of any of them replaces the recipe's values of all
SAME_QUANTITY = (frozenset({"batch_size", "global_batch_size"}),)


def imagenet_steps(epochs: float, global_batch_size: int) -> int:
    """Optimizer steps of ``epochs`` ImageNet-1k epochs at ``global_batch_size`` (whole batches per epoch)."""
    return int(epochs * (IMAGENET_TRAIN_IMAGES // global_batch_size))


@dataclass(frozen=True)
class Assumed:
    """A value the paper does not state; ``why`` says where it comes from instead."""
    why: str


def assumed(why: str) -> Assumed:
    return Assumed(why)


def _raw(value) -> str:
    """A value as ``--set`` takes it: booleans true/false, tuples comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


@dataclass(frozen=True)
class RecipeValue:
    key: str
    value: str
    source: str | Assumed

    def __post_init__(self):
        object.__setattr__(self, "value", _raw(self.value))
        if not self.key.isidentifier():
            raise VQBenchError(f"recipe key {self.key!r} is not a setting name")
        why = self.source.why if isinstance(self.source, Assumed) else self.source
        if not isinstance(why, str) or not why.strip():
            raise VQBenchError(f"recipe value {self.key}={self.value} needs a source (a paper section or "
                               "table) or assumed(\"why\")")

    @property
    def is_assumed(self) -> bool:
        return isinstance(self.source, Assumed)

    @property
    def source_text(self) -> str:
        return self.source.why if self.is_assumed else self.source

    @property
    def override(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class Recipe:
    """A preset's training recipe: ``values`` (one per setting) and ``notes`` on what is not modelled."""
    values: tuple[RecipeValue, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        keys = [v.key for v in self.values]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise VQBenchError(f"recipe sets {', '.join(repeated)} more than once")

    @classmethod
    def of(cls, *entries: RecipeValue | tuple, notes: tuple[str, ...] = ()) -> "Recipe":
        """``Recipe.of((key, value, source), ...)``; a value is a string as ``--set`` takes it, or a number,
        boolean or tuple written as one."""
        return cls(tuple(e if isinstance(e, RecipeValue) else RecipeValue(*e) for e in entries), tuple(notes))

    def __add__(self, other: "Recipe") -> "Recipe":
        """This recipe with ``other``'s values replacing its values of the same keys, notes appended."""
        replaced = {v.key for v in other.values}
        return Recipe(tuple(v for v in self.values if v.key not in replaced) + other.values,
                      self.notes + tuple(n for n in other.notes if n not in self.notes))

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self):
        return iter(self.values)

    def get(self, key: str) -> RecipeValue | None:
        return next((v for v in self.values if v.key == key), None)

    def overrides(self) -> list[str]:
        return [v.override for v in self.values]

    def with_overrides(self, user: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The recipe's ``key=value`` strings that the user's do not replace, then the user's: the user
        wins, and a user value of one of ``SAME_QUANTITY`` drops the recipe's values of the others."""
        user = list(user)
        dropped = {split_override(item)[0] for item in user}
        for group in SAME_QUANTITY:
            if dropped & group:
                dropped |= group
        return [v.override for v in self.values if v.key not in dropped] + user
