"""Each thing is registered once, by the file that defines it: modules are discovered, not listed;
registration metadata is a typed record; a generator family's layouts are declared once."""
import ast
import dataclasses
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import harness.core.registry as registry_module
from conftest import REPO
from harness.core.contracts import Conditioning, TokenLayout
from harness.core.discovery import registering_modules
from harness.core.errors import VQBenchError
from harness.core.registry import ALL, GENERATORS, GeneratorInfo, Registry, TokenizerInfo

HARNESS = REPO / "harness"


def test_an_unknown_metadata_field_is_an_error_naming_the_field_and_the_entry():
    reg = Registry("tokenizer", TokenizerInfo)
    with pytest.raises(VQBenchError, match=r"tokenizer 'vq-typo': unknown field 'scael'; did you mean scale\?; "
                                           r"missing field 'scale'"):
        reg.register("vq-typo", family="vq", scael="tiny", description="")
    assert "vq-typo" not in reg._entries


def test_a_missing_field_and_a_bad_value_are_errors():
    reg = Registry("generator", GeneratorInfo)
    with pytest.raises(VQBenchError, match="generator 'g': missing field 'layouts'"):
        reg.add("g", object, family="ar", scale="tiny", description="")
    with pytest.raises(VQBenchError, match="generator 'g': scale must be one of tiny, small, paper"):
        reg.add("g", object, family="ar", scale="huge", layouts=("spatial",), description="")
    with pytest.raises(VQBenchError, match="generator 'g': layouts must be"):
        reg.add("g", object, family="ar", scale="tiny", layouts=("raster",), description="")


def test_records_are_read_by_attribute_and_misspelt_reads_fail():
    reg = Registry("tokenizer", TokenizerInfo)
    reg.add("t", object, family="vq", scale="tiny", description="d")
    info = reg._entries["t"].meta
    assert (info.family, info.scale, info.paper_params, len(info.recipe)) == ("vq", "tiny", None, 0)
    assert info.get("scale") == "tiny" and info.get("paper_params", 1.0) == 1.0
    assert "scale" in info and "paper_params" not in info and "layouts" not in info
    with pytest.raises(KeyError, match="no field 'scael'"):
        info.get("scael")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.scale = "paper"
    with pytest.raises(VQBenchError, match="no field 'scael'"):
        GENERATORS.names(scael="tiny")


def test_every_registry_has_a_typed_record_and_every_entry_fills_it():
    for reg in ALL.values():
        assert dataclasses.is_dataclass(reg.info) and reg.info.__dataclass_params__.frozen
        for e in reg.entries():
            assert isinstance(e.meta, reg.info), e.name


# ------------------------------------------------------------------ discovery
def _direct_registrations() -> set[str]:
    """Independent text scan: modules with a line that calls one of the registries by name."""
    names = "|".join(n for n, v in vars(registry_module).items() if isinstance(v, Registry))
    call = re.compile(rf"^\s*@?({names})\.(register|add)\(", re.M)
    found = set()
    for path in HARNESS.rglob("*.py"):
        if call.search(path.read_text()):
            parts = path.relative_to(REPO).with_suffix("").parts
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_registering_builtin_module_is_discovered():
    discovered = set(registering_modules())
    assert _direct_registrations() <= discovered, _direct_registrations() - discovered
    # whatever registered an entry from harness/ (directly or through a helper) was discovered
    origins = {getattr(e.obj, "__module__", None) for reg in ALL.values() for e in reg.entries()}
    harness_origins = {m for m in origins if m and m.startswith("harness.")}
    assert harness_origins <= discovered, harness_origins - discovered
    # modules that only read registries are not imported for nothing
    assert not discovered & {"harness.cli", "harness.core.registry", "harness.core.discovery",
                             "harness.models.catalog", "harness.training.train_tokenizer"}


def test_a_module_dropped_into_a_plugin_folder_is_discovered(tmp_path):
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "throwaway.py").write_text(textwrap.dedent("""
        from harness.core.registry import TOKENIZERS
        TOKENIZERS.add("throwaway-tiny", lambda: None, family="throwaway", scale="tiny",
                       description="a preset no list names")
    """))
    code = ("from harness.core.registry import TOKENIZERS; e = TOKENIZERS.entry('throwaway-tiny'); "
            "print(e.obj.__module__, e.meta.family)")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                         env={"VQBENCH_PLUGIN_PATH": str(folder), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["vqbench_plugins.my_plugins.throwaway", "throwaway"]


def _harness_imports(path) -> set[str]:
    """Every harness module `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.startswith("harness")}


def test_no_import_cycle_between_the_registry_and_discovery():
    core = HARNESS / "core"
    assert _harness_imports(core / "registry.py") <= {"harness.core.discovery", "harness.core.errors",
                                                      "harness.core.recipes"}
    for name in ("discovery.py", "plugins.py", "recipes.py"):
        assert "harness.core.registry" not in _harness_imports(core / name), name
    code = ("import sys, harness.core.registry; "
            "print(sorted(m for m in sys.modules if m.startswith('harness.') and not m.startswith('harness.core')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ generator layouts
LAYOUTS = {"spatial": TokenLayout.constant(4, 16),
           "channel": TokenLayout.constant(4, 16, position_kind="channel"),
           "latent": TokenLayout.constant(4, 16, position_kind="latent"),
           "factorized": TokenLayout.constant(4, 16, num_factors=2)}


def _undeclared():
    return [pytest.param(e.name, kind, id=f"{e.name}-{kind}") for e in GENERATORS.entries()
            if e.meta.scale == "tiny" for kind in LAYOUTS if kind not in e.meta.layouts]


@pytest.mark.parametrize("name,kind", _undeclared())
def test_a_direct_build_on_an_undeclared_layout_kind_is_rejected(name, kind):
    with torch.device("meta"), pytest.raises(VQBenchError, match=f"supports .* not {kind}"):
        GENERATORS.get(name)().build(LAYOUTS[kind], Conditioning("class", num_classes=3),
                                     codebook=torch.zeros(16, 8))


def test_layouts_are_declared_only_in_the_registrations():
    generators = [p.read_text() for p in (REPO / "generators").glob("*.py")]
    assert not any("require_layout" in text for text in generators)
    families = {e.meta.family for e in GENERATORS.entries()}
    for family in families:     # one set of layout kinds per family, what Generator.__init__ checks
        assert len({e.meta.layouts for e in GENERATORS.entries() if e.meta.family == family}) == 1, family
