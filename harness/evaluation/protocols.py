"""Evaluation protocols: each a frozen, named set of every choice behind an Inception-based number.

The same FID formula gives different numbers under different evaluators (LlamaGen's VQ-16: rFID 2.19
published, 4.28 against ADM's VIRTUAL reference, 2.11 with clean-fid; LlamaGen issue #34), so vqbench
names each evaluator's choices, records the name in every row (``protocol``) and never puts two
protocols in one table column. A protocol fixes:

- the network and its weights: the TF ``inception-2015-12-05`` FID graph (harness.evaluation.features), or for
  ``fd-dinov2`` DINOv2 ViT-L/14 through torch-fidelity's extractor (harness.evaluation.dinov2);
- how images reach it (``FeatureInput``): uint8 quantization, resize filter to 299 x 299, normalization,
  and whether sFID's spatial features are taken;
- the statistics: KID subsets (number, size, seed, draw order), IS splits (count or size, shuffled or in
  order), precision/recall neighbourhood k and distance precision, density/coverage k, and whether an ADM reference batch
  (``--reference FILE.npz``) may stand in for the reference images.

N (of samples, of reference images) and the reference split are evaluation settings; every row records
them (``n_images``, ``extra.reference_n``), so a protocol is comparable only at equal N.

``vqbench list protocols`` prints one line per protocol; the README's table says which paper columns
each reproduces.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import MissingWeightsError, VQBenchError
from harness.core.registry import DEFAULT_PROTOCOL, METRICS, PROTOCOLS
from harness.evaluation.features import FeatureInput


@dataclass(frozen=True, kw_only=True)
class FidelityProtocol:
    name: str
    description: str                       # one line for `vqbench list protocols`
    reproduces: str                        # the evaluator (and paper columns) it reproduces
    feature_input: FeatureInput
    kid_subsets: int | None = 100          # None: the protocol defines no KID
    kid_subset_size: int = 1000
    kid_seed: int = 2020                   # subsets drawn generated set first, as torch-fidelity and clean-fid's
                                           # kernel_distance(reference, generated) do
    is_splits: int | None = 10             # IS over this many splits of the shuffled logits ...
    is_split_size: int | None = None       # ... or over consecutive splits of this many, in order (ADM);
                                           # both None: the protocol defines no IS
    is_seed: int = 2020
    pr_k: int | None = 3                   # None: the protocol defines no precision/recall
    pr_distances: str = "float64"          # or "adm-float16": ADM's squared distances in float16
    dc_k: int | None = None                # density/coverage (Naeem et al. 2020) with this k; None: not defined
    sfid: bool = False                     # the protocol defines sFID (spatial features)
    reference_npz: bool = False            # an ADM reference batch may stand in for the reference images

    def defines(self, value: str) -> bool:
        """Whether this protocol defines value ``value`` (``gkid``, ``rfid``, ``sfid``, ...); values that
        are not Inception statistics (PSNR, ...) are outside every protocol here and count as defined."""
        kind = _VALUE_KIND.get(value)
        defines_is = self.is_splits is not None or self.is_split_size is not None
        return {None: True, "fid": True, "is": defines_is, "kid": self.kid_subsets is not None,
                "pr": self.pr_k is not None, "sfid": self.sfid, "dc": self.dc_k is not None}[kind]

    def check_available(self) -> None:
        """A one-line error when this protocol's feature network cannot run here (DINOv2 not in the cache)."""
        if self.feature_input.network != "inception":
            from harness.evaluation.dinov2 import dinov2_unavailable_reason
            reason = dinov2_unavailable_reason()
            if reason:
                raise MissingWeightsError(f"protocol {self.name!r}: {reason}")


# the kind of statistic behind each Inception value name
_VALUE_KIND = {"rfid": "fid", "gfid": "fid", "rkid": "kid", "rkid_std": "kid", "gkid": "kid", "gkid_std": "kid",
               "precision": "pr", "recall": "pr", "sfid": "sfid", "inception_score": "is",
               "inception_score_std": "is", "density": "dc", "coverage": "dc"}


for _protocol in (
    FidelityProtocol(
        name="torch-fidelity",
        description="torch-fidelity's definitions (vqbench's default): TF1-bilinear input, KID 100 x min(1000, N) "
                    "subsets, IS 10 shuffled splits, precision/recall k=3 in float64; plus density/coverage "
                    "(Naeem et al., k=5, as the prdc package), which torch-fidelity does not compute",
        reproduces="torch-fidelity 0.3/0.4 (fidelity --fid --kid --isc --prc); TF FID's input pipeline; "
                   "density/coverage as prdc (clovaai/generative-evaluation-prdc)",
        feature_input=FeatureInput(), dc_k=5),
    FidelityProtocol(
        name="adm",
        description="the guided-diffusion (ADM) evaluator: FID, sFID (mixed_6/conv, 7 channels), IS in splits of "
                    "5,000 in order, precision/recall of its manifold estimator (k=3, float16 distances); "
                    "--reference takes its .npz reference batches",
        reproduces="openai/guided-diffusion evaluations/evaluator.py: the gFID/sFID/IS/Prec/Rec columns of ADM, "
                   "DiT, LlamaGen, VAR, MaskGIT-style papers (and LlamaGen's rFID against its validation npz)",
        feature_input=FeatureInput(spatial=True), kid_subsets=None, is_splits=None, is_split_size=5000,
        pr_distances="adm-float16", sfid=True, reference_npz=True),
    FidelityProtocol(
        name="clean-fid",
        description="clean-fid mode 'clean': clean-fid's PIL bicubic resize (antialiased, float), FID and KID "
                    "(its kernel_distance: 100 x min(1000, N), seeded); no IS, no precision/recall",
        reproduces="clean-fid compute_fid/compute_kid(mode='clean'): VQGAN-LC's and clean-fid-reporting papers' rFID",
        feature_input=FeatureInput(resize="pil-bicubic"), is_splits=None, pr_k=None),
    FidelityProtocol(
        name="clean-fid-legacy-pytorch",
        description="clean-fid mode 'legacy_pytorch' (pytorch-fid's float path): torch bilinear resize, "
                    "2x/255 - 1 input, FID and KID",
        reproduces="pytorch-fid / clean-fid(mode='legacy_pytorch'): the FID SEED-Voken (Open-MAGVIT2) reports",
        feature_input=FeatureInput(resize="torch-bilinear", normalize="pytorch-fid"), is_splits=None, pr_k=None),
    FidelityProtocol(
        name="clean-fid-legacy-tensorflow",
        description="clean-fid mode 'legacy_tensorflow' (TF FID): the graph's own TF1 bilinear resize, FID and KID",
        reproduces="TTUR's TF FID / clean-fid(mode='legacy_tensorflow')",
        feature_input=FeatureInput(), is_splits=None, pr_k=None),
    FidelityProtocol(
        name="titok",
        description="1d-tokenizer's (TiTok) evaluator: images truncated to uint8 ((x * 255).to(uint8)) before "
                    "torch-fidelity's network; rFID and IS in one split; no KID, no precision/recall",
        reproduces="bytedance/1d-tokenizer evaluator/evaluator.py: the rFID / IS columns of TiTok, MaskGen, "
                   "RAR, FlowTok",
        feature_input=FeatureInput(quantize="truncate"), kid_subsets=None, is_splits=1, pr_k=None),
    FidelityProtocol(
        name="fd-dinov2",
        description="FD_DINOv2 (Stein et al. 2023): torch-fidelity's DINOv2 ViT-L/14 extractor (224 px, CLS "
                    "embedding) in place of Inception; FD, KID, precision/recall k=3, density/coverage k=5; no IS; "
                    "needs DINOv2 in torch.hub's cache",
        reproduces="the FD_DINOv2 column of Stein et al. 2023 and of papers reporting it (torch-fidelity 0.4 "
                   "--feature-extractor dinov2-vit-l-14)",
        feature_input=FeatureInput(network="dinov2-vit-l-14"), is_splits=None, dc_k=5),
):
    PROTOCOLS.add(_protocol.name, _protocol, description=_protocol.description, reproduces=_protocol.reproduces)


def get_protocol(name: str) -> FidelityProtocol:
    return PROTOCOLS.get(name)


def check_reference(protocol: str, reference) -> None:
    """An ADM reference batch stands in for the reference images only under a protocol that takes one."""
    if not get_protocol(protocol).reference_npz:
        raise VQBenchError(f"--reference {reference}: protocol {protocol!r} compares with reference images of a "
                           "dataset split; ADM reference batches belong to --protocol adm")


def main_value(metric_cls) -> str:
    """The value a protocol metric is named for (``rfid`` of rfid/rkid/rkid_std)."""
    return next(iter(metric_cls.higher_is_better))


def check_defined(protocol: FidelityProtocol, values) -> None:
    """One error naming the values ``protocol`` does not define (ADM has no KID; clean-fid no precision)."""
    missing = [v for v in values if not protocol.defines(v)]
    if missing:
        raise VQBenchError(f"protocol {protocol.name!r} does not define {', '.join(missing)}; leave "
                           f"{'them' if len(missing) > 1 else 'it'} out of --metrics or choose another --protocol "
                           "(`vqbench list protocols`)")


def check_metrics(names, protocol: str) -> None:
    """Before any work: every registered metric of ``names`` that follows a protocol is defined by it."""
    fidelity = get_protocol(protocol)
    check_defined(fidelity, [main_value(METRICS.get(n)) for n in names if METRICS.get(n).uses_protocol])


def follows_protocol(names) -> bool:
    """Whether any of the registered metrics ``names`` follows the evaluation protocol."""
    return any(METRICS.get(n).uses_protocol for n in names)


def protocol_metrics(names, protocol: str) -> tuple[str, ...]:
    """``names`` without the registered metrics ``protocol`` does not define (a default list under any protocol)."""
    fidelity = get_protocol(protocol)
    return tuple(n for n in names if not METRICS.get(n).uses_protocol or fidelity.defines(main_value(METRICS.get(n))))


def row_protocol(row: dict) -> str:
    """The protocol of a results row. Inception rows written before protocols existed (no ``protocol`` in
    their evaluation settings) carry the tags "canonical" (reconstruction) or "adm" (generation) but were
    computed with torch-fidelity's definitions: they read as torch-fidelity."""
    from harness.core.results import row_extra
    extra = row_extra(row)
    settings = extra.get("settings") or {}
    value = str(row.get("metric", "")).removesuffix("_nocfg")
    if "protocol" not in settings and extra.get("evaluation") in ("reconstruction", "generation") \
            and value in _VALUE_KIND:
        return DEFAULT_PROTOCOL
    return row["protocol"]
