import dataclasses
from typing import Literal

import pytest

from harness.core.config import apply_overrides, config_hash, split_overrides
from harness.core.errors import VQBenchError
from harness.core.registry import Registry, TokenizerInfo


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 1e-4
    steps: int = 10
    ch_mult: tuple[int, ...] = (1, 2)
    l2_norm: bool = True
    schedule: Literal["cosine", "constant"] = "cosine"
    limit: int | None = None


def test_typed_overrides():
    cfg = apply_overrides(Cfg(), {"lr": "3e-4", "steps": "7", "ch_mult": "1,2,4", "l2_norm": "false",
                                  "schedule": "constant", "limit": "none"})
    assert cfg == Cfg(3e-4, 7, (1, 2, 4), False, "constant", None)
    assert apply_overrides(Cfg(), {"limit": "5"}).limit == 5


@pytest.mark.parametrize("key,raw,message", [
    ("steps", "1.5", "expected int"), ("lr", "fast", "expected float"), ("l2_norm", "maybe", "boolean"),
    ("schedule", "linear", "one of cosine, constant"), ("stesp", "3", "did you mean steps"),
])
def test_bad_overrides_name_the_key(key, raw, message):
    with pytest.raises(VQBenchError, match=message):
        apply_overrides(Cfg(), {key: raw})


def test_split_overrides_routes_to_the_config_that_has_the_field():
    @dataclasses.dataclass(frozen=True)
    class Other:
        batch_size: int = 1
    model, train = split_overrides(["lr=1", "batch_size=4"], Cfg(), Other())
    assert model == {"lr": "1"} and train == {"batch_size": "4"}
    with pytest.raises(VQBenchError, match="expected key=value"):
        split_overrides(["lr"], Cfg(), Other())


def test_config_hash_changes_with_values():
    assert config_hash(Cfg()) == config_hash(Cfg())
    assert config_hash(Cfg()) != config_hash(Cfg(lr=1.0))


def test_registry_duplicates_and_suggestions():
    reg = Registry("widget", TokenizerInfo)
    reg.register("patch-vq", family="vq", scale="tiny", description="")(object)
    with pytest.raises(VQBenchError, match="duplicate widget name 'patch-vq'"):
        reg.register("patch-vq", family="vq", scale="small", description="")(object)
    with pytest.raises(VQBenchError, match="did you mean patch-vq"):
        reg.get("patch-qv")
    assert reg.names(scale="tiny") == ["patch-vq"]


def test_adding_a_field_with_a_default_keeps_existing_hashes():
    old = dataclasses.make_dataclass("Cfg", [("lr", float, 1e-4)], frozen=True)
    new = dataclasses.make_dataclass("Cfg", [("lr", float, 1e-4), ("lecam_weight", float, 0.0)], frozen=True)
    assert config_hash(old(lr=3e-4)) == config_hash(new(lr=3e-4))
    assert config_hash(new(lr=3e-4, lecam_weight=0.1)) != config_hash(new(lr=3e-4))
