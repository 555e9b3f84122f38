"""``vqbench enter TRACK --plugin FILE``: train and evaluate a new quantizer (or generator) from one file on a
track, exactly as the track's own entries were, and add it to the track's results and site.

The file registers one tokenizer or generator preset (README "Layout and extending"). A tokenizer trains
with the recipe of the track's template run (``Track.tokenizer_template``: its training settings and
evaluations) on the track's data; a generator as ``Track.generator_template``, on the tokens of that run's
tokenizer (trained first when the folder lacks it). Runs land in the track's suite folder under
``<suite>/<label>``, so the track's table shows them beside the others; then the site is rebuilt.
Later commands on the run (``vqbench eval``) need the file again: put its folder in $VQBENCH_PLUGIN_PATH.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from harness.core.errors import VQBenchError
from harness.core.plugins import load_plugin_file
from harness.core.registry import GENERATORS, SUITES, TOKENIZERS, TRACKS
from harness.core.results import unseeded
from harness.suites import Suite, run_suite


LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


def plugin_presets(plugin: Path) -> tuple[list[str], list[str]]:
    """(tokenizer presets, generator presets) that ``plugin`` registers (also when a plugin folder in
    $VQBENCH_PLUGIN_PATH already imported it)."""
    TOKENIZERS.names()                       # the built-ins and plugin folders first
    module = load_plugin_file(plugin)
    return ([e.name for e in TOKENIZERS.entries() if getattr(e.obj, "__module__", None) == module],
            [e.name for e in GENERATORS.entries() if getattr(e.obj, "__module__", None) == module])


def check_label(label: str) -> None:
    """A run label is a folder name under runs/ and a row's run id: no path separators, no seed suffix."""
    if not LABEL.fullmatch(label) or unseeded(label)[1] != 0:
        raise VQBenchError(f"--label {label!r}: use letters, digits and . _ @ + - (starting with a letter or digit), "
                           "without a .seedN suffix (seed replicas are named that way)")


def check_fits(track, preset: str) -> None:
    """A tokenizer entry has the track's token budget (its layout's positions) at the track's resolution."""
    if preset not in TOKENIZERS:
        return
    from harness.models.catalog import build_tokenizer
    cfg, model = build_tokenizer(preset, {}, device="meta")
    tokens = model.layout.num_positions
    resolution = getattr(cfg, "resolution", track.resolution)
    if tokens != track.tokens or resolution != track.resolution:
        raise VQBenchError(f"preset {preset} gives {tokens} tokens at {resolution} px; track {track.name} is "
                           f"{track.tokens} tokens at {track.resolution} px (entries are comparable only at its budget)")


def entry_suite(track, preset: str, label: str) -> Suite:
    """The one-entry suite: ``preset`` trained and evaluated as the track's template run (named as the track's
    suite, so its run ids are the track's)."""
    if track.suite is None:
        raise VQBenchError(f"track {track.name!r} takes no new entries here (its data is not on this machine's "
                           "suite list); `vqbench list tracks`")
    suite = SUITES.get(track.suite)
    runs = {r.label: r for r in suite.runs}
    if label in runs or label in {g.label for g in suite.generators}:
        raise VQBenchError(f"--label {label}: the track's suite already has a run of that name; choose another")
    template = runs[track.tokenizer_template]
    if preset in TOKENIZERS:
        return Suite(suite.name, f"entry {label}", (dataclasses.replace(template, label=label, preset=preset),),
                     seeds=track.seeds)
    generator = {g.label: g for g in suite.generators}[track.generator_template]
    tokenizer = runs[generator.tokenizer]
    return Suite(suite.name, f"entry {label}", (tokenizer,),
                 (dataclasses.replace(generator, label=label, preset=preset, train_label=None),), seeds=track.seeds)


def enter(track_name: str, plugin: Path, out: Path | None = None, *, preset: str | None = None,
          label: str | None = None, device: str = "auto", progress: bool = True, ar_probe: bool = True) -> Path | None:
    """Train, evaluate and add the plugin's preset to ``track_name`` (a tokenizer also gets the track's AR probe
    unless ``ar_probe`` is False); returns the rebuilt site's index.html (None on processes other than the
    main one)."""
    from harness.leaderboard.ar_probe import probe_suite
    from harness.core.distributed import is_main_process
    from harness.leaderboard.site import build_site
    track = TRACKS.get(track_name)
    tokenizers, generators = plugin_presets(plugin)
    found = tokenizers + generators
    if preset is None:
        if len(found) != 1:
            raise VQBenchError(f"--plugin {plugin} registers {len(found)} presets ({', '.join(found) or 'none'}); "
                               "it should register one, or name it with --preset")
        preset = found[0]
    elif preset not in TOKENIZERS and preset not in GENERATORS:
        raise VQBenchError(f"--preset {preset}: not a registered tokenizer or generator preset")
    label = label or preset
    check_label(label)
    if track.suite is not None:
        check_fits(track, preset)
    suite = entry_suite(track, preset, label)
    out = Path(out) if out is not None else Path("reports") / track.suite
    run_suite(suite, out, device=device, progress=progress, timings=f"timings_entry_{label}.md")
    if ar_probe and track.ar_probe is not None and preset in TOKENIZERS:
        run_suite(probe_suite(track, suite.runs), out, device=device, progress=progress,
                  timings=f"timings_entry_{label}_ar_probe.md")
    if not is_main_process():
        return None
    return build_site([out / "results.jsonl"], out / "site")
