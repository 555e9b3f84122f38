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
from pathlib import Path

from harness.core.errors import VQBenchError
from harness.core.plugins import load_plugin_file
from harness.core.registry import GENERATORS, SUITES, TOKENIZERS, TRACKS
from harness.suites import Suite, run_suite


def new_presets(plugin: Path) -> tuple[list[str], list[str]]:
    """(tokenizer presets, generator presets) that importing ``plugin`` registers."""
    before = (set(TOKENIZERS.names()), set(GENERATORS.names()))
    load_plugin_file(plugin)
    return ([n for n in TOKENIZERS.names() if n not in before[0]],
            [n for n in GENERATORS.names() if n not in before[1]])


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
        return Suite(suite.name, f"entry {label}", (dataclasses.replace(template, label=label, preset=preset),))
    generator = {g.label: g for g in suite.generators}[track.generator_template]
    tokenizer = runs[generator.tokenizer]
    return Suite(suite.name, f"entry {label}", (tokenizer,),
                 (dataclasses.replace(generator, label=label, preset=preset, train_label=None),))


def enter(track_name: str, plugin: Path, out: Path | None = None, *, preset: str | None = None,
          label: str | None = None, device: str = "auto", progress: bool = True) -> Path | None:
    """Train, evaluate and add the plugin's preset to ``track_name``; returns the rebuilt site's index.html
    (None on processes other than the main one)."""
    from harness.core.distributed import is_main_process
    from harness.leaderboard.site import build_site
    track = TRACKS.get(track_name)
    tokenizers, generators = new_presets(plugin)
    found = tokenizers + generators
    if preset is None:
        if len(found) != 1:
            raise VQBenchError(f"--plugin {plugin} registers {len(found)} presets ({', '.join(found) or 'none'}); "
                               "it should register one, or name it with --preset")
        preset = found[0]
    elif preset not in TOKENIZERS and preset not in GENERATORS:
        raise VQBenchError(f"--preset {preset}: not a registered tokenizer or generator preset")
    suite = entry_suite(track, preset, label or preset)
    out = Path(out) if out is not None else Path("reports") / track.suite
    run_suite(suite, out, device=device, progress=progress, timings=f"timings_entry_{label or preset}.md")
    if not is_main_process():
        return None
    return build_site([out / "results.jsonl"], out / "site")
