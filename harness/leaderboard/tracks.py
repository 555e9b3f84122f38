"""Leaderboard tracks: each a frozen setting (data, resolution, token budget, training budget, seeds,
evaluation protocol, metrics) whose entries are comparable by construction. Entries of different
tracks never share a table.

A reproduced run is on a track when its rows come from the track's suite (run ids ``<suite>/<label>``)
on the track's dataset and resolution; a published number (baselines/published.jsonl) when its dataset,
resolution and token count are the track's (a number that states no token count is shown only when
``published_untokenized`` says the track takes it). ``reported_as`` pairs a preset with a paper's model, so
the page sets the reproduced value beside the reported one with their difference. ``ar_probe``: the same AR
trained on every tokenizer entry's tokens (harness.leaderboard.ar_probe).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.core.registry import TRACKS
from harness.leaderboard.ar_probe import ARProbe


@dataclass(frozen=True, kw_only=True)
class Track:
    name: str
    description: str
    dataset: str
    resolution: int
    tokens: int                               # token budget per image (positions; sub-tokens of a factor not counted)
    training: str                             # the training budget, in words
    protocol: str                             # of the Inception columns (harness.evaluation.protocols)
    suite: str | None = None                  # the suite whose runs are its reproduced entries
    seeds: int = 1
    tokenizer_metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "rfid", "codebook_usage")
    generator_metrics: tuple[str, ...] = ("gfid", "gkid", "precision", "recall", "inception_score")
    published_untokenized: bool = False       # also show published numbers that state no token count
    reported_as: dict[str, tuple[str, str]] = field(default_factory=dict)   # preset -> (paper, published model)
    # `vqbench enter`: a new tokenizer trains and is evaluated as the suite's run of this label does; a new
    # generator as this generator run, on the tokens of that run's tokenizer
    tokenizer_template: str | None = None
    generator_template: str | None = None
    ar_probe: ARProbe | None = None          # the same AR on every tokenizer entry (`vqbench ar-probe TRACK`)

    def takes_published(self, record) -> bool:
        tokens_match = record.tokens == self.tokens or (record.tokens is None and self.published_untokenized)
        return record.dataset == self.dataset and record.resolution == self.resolution and tokens_match

    def takes_run(self, run_id: str, dataset: str, resolution) -> bool:
        """A run of the track's suite on its data; a seed replica (``<run>.seed1``) is not an entry of its own
        (the track's entries are at its declared seeds)."""
        from harness.core.results import unseeded
        return (self.suite is not None and str(run_id).startswith(self.suite + "/") and dataset == self.dataset
                and resolution == self.resolution and unseeded(str(run_id))[1] == 0)

    def takes_probe_run(self, run_id: str, dataset: str, resolution) -> bool:
        """A run of the track's AR probe (``<probe suite>/ar-probe@<tokenizer label>``) on its data: not an entry,
        its values shown beside the tokenizer entry's."""
        from harness.core.results import unseeded
        from harness.leaderboard.ar_probe import PROBE_PREFIX
        return (self.ar_probe is not None and str(run_id).startswith(f"{self.ar_probe.suite}/{PROBE_PREFIX}")
                and dataset == self.dataset and resolution == self.resolution and unseeded(str(run_id))[1] == 0)


def register_track(track: Track) -> Track:
    TRACKS.add(track.name, track, description=track.description)
    return track


register_track(Track(
    name="fmnist-49tok",
    description="Fashion-MNIST 28 x 28, 49 tokens per image, codebooks of about 1,024, 200 tokenizer steps and 800 "
                "generator steps of 32 images on 2 CPU cores (the main job's suite `default`); rFID/gFID under "
                "torch-fidelity on 150 images, pixel and token metrics on 2,000; the AR probe (ar@vq's recipe on every "
                "tokenizer entry) by `vqbench ar-probe fmnist-49tok`",
    dataset="fashion-mnist", resolution=28, tokens=49, suite="default", protocol="torch-fidelity",
    training="tokenizers 200 steps x 32 images, generators 800 steps x 32 images (suite `default`)",
    tokenizer_template="vq-fmnist", generator_template="ar@vq",
    # trained as ar@vq (ar@vq, ar@vcq-constant and ar@vcq-cosine are reused), sampled with ar@vq's sampler for all
    ar_probe=ARProbe(template="ar@vq", suite="ar-probe", likelihood_n=2000)))

register_track(Track(
    name="imagenet256-256tok",
    description="ImageNet 256 x 256, 256 tokens per image (the papers' main setting): the papers' reported numbers; "
                "reproduced entries need an ImageNet folder and GPUs (imagefolder:<path>)",
    dataset="imagenet", resolution=256, tokens=256, protocol="adm", published_untokenized=True,
    training="as each paper states (published), or the paper preset's recipe (`vqbench describe PRESET`)",
    reported_as={"vq-f16-imagenet": ("fqgan", "LlamaGen")}))
