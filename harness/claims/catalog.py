"""The seed papers' claims that can be measured at small scale, each a registered experiment.

Every claim names its source and the paper's number, the runs it reads, what it measures and the
checks declared before running it (the verdict rule is harness.claims.claim's). Where a paper's own
evidence is narrower than the claim as vqbench states it, ``paper_value`` says so.

Runs: ``python run_all.py`` measures the claims whose runs are the default suite's (``main_job``);
``vqbench claims --all`` also trains the runs of the suite ``claims`` (harness.suites: codebook-size
sweeps, FQ with one codebook, CodebookSize-Aware CFG on a constant codebook) in the same folder.
"""
from __future__ import annotations

from harness.claims.claim import Check, Claim, register_claim
from harness.claims.evidence import Estimate, MissingEvidence, SeedRows, mean_of
from harness.claims.runs import CBCFG_ON_CONSTANT, FQ_NO_DISENTANGLE, FQ_NO_LOSSES, FQ_SINGLE, SWEEP_K, sweep_label

SHORT_PREFIXES = (1, 2, 4, 8)          # "the first k channels" of the nested-dropout claim (of 49)


# ----------------------------------------------------------------------------------------- CVQ
def _usage_sweep(rows: SeedRows) -> dict[str, Estimate]:
    cvq = [rows.value(sweep_label("cvq", k), "codebook_usage", split="test") for k in SWEEP_K]
    vq = [rows.value(sweep_label("vq-d49", k), "codebook_usage", split="test") for k in SWEEP_K]
    out = {f"usage_cvq_k{k}": e for k, e in zip(SWEEP_K, cvq)} | {f"usage_vq_k{k}": e for k, e in zip(SWEEP_K, vq)}
    return out | {"min_usage_cvq": min(cvq, key=lambda e: e.value),
                  "usage_gap_at_largest_k": cvq[-1] - vq[-1]}


register_claim(Claim(
    "cvq-usage-vs-codebook-size",
    "CVQ keeps codebook usage near 100% as the codebook grows, where a patch VQ with the same code "
    "dimension collapses",
    "CVQ paper, Table 3 (and Table 1)",
    "usage VQ 20.3 / 12.6 / 4.5 / 1.1 % vs CVQ 100 / 100 / 100 / 96.1 % at K = 1k / 4k / 16k / 64k "
    "(ImageNet 256, 256 tokens)",
    "test-split codebook usage (2,000 images) of cvq-fmnist and vq-fmnist-d49 (vanilla VQ, codes of "
    "CVQ's dimension 49) trained alike at K = 256 ... 16,384",
    _usage_sweep,
    (Check("min_usage_cvq", ">", 0.9), Check("usage_gap_at_largest_k", ">", 0.3)),
    runs=tuple(sweep_label(f, k) for f in ("cvq", "vq-d49") for k in SWEEP_K),
    shown=("min_usage_cvq", "usage_cvq_k16384", "usage_vq_k16384", "usage_gap_at_largest_k")))


def _token_similarity(rows: SeedRows) -> dict[str, Estimate]:
    cvq = rows.value("cvq-fmnist", "token_similarity", split="test")
    vq = rows.value(sweep_label("vq-d49", 1024), "token_similarity", split="test")
    return {"token_similarity_cvq": cvq, "token_similarity_vq": vq, "similarity_gap": vq - cvq}


register_claim(Claim(
    "channel-tokens-less-similar",
    "The tokens of one image are less similar to each other as channel tokens (CVQ) than as patch tokens",
    "CVQ paper, Sec. 3.1 and Fig. 4; masked channel-wise paper, Sec. 1",
    "no number: Fig. 4 shows t-SNE plots of channel and patch embeddings; the masked channel-wise paper "
    "says channel tokens \"have low similarities between them\"",
    "mean cosine similarity between the code vectors of two tokens of one test image (2,000 images), "
    "vq-fmnist-d49 minus cvq-fmnist, both with 49-dim codes, K = 1,024",
    _token_similarity,
    (Check("similarity_gap", ">", 0.0),),
    runs=("cvq-fmnist", sweep_label("vq-d49", 1024))))


def _nested_dropout(rows: SeedRows) -> dict[str, Estimate]:
    p0 = rows.curve("cvq-fmnist", "progressive_psnr")
    p25 = rows.curve("cvq-fmnist-drop25", "progressive_psnr")
    gain = sum(p25[k] - p0[k] for k in SHORT_PREFIXES) / len(SHORT_PREFIXES)
    full = max(p0.index)
    return {"short_prefix_gain_db": Estimate(float(gain)),
            "full_cost_db": rows.value("cvq-fmnist", "psnr", split="test")
            - rows.value("cvq-fmnist-drop25", "psnr", split="test"),
            "psnr_first8_p0": Estimate(float(p0[8])), "psnr_first8_p25": Estimate(float(p25[8])),
            "psnr_all_p0": Estimate(float(p0[full])), "psnr_all_p25": Estimate(float(p25[full]))}


register_claim(Claim(
    "nested-dropout-prefixes",
    "Nested channel dropout (p = 0.25) makes reconstruction from the first k channels degrade "
    "gracefully where p = 0 does not, at a small cost to full reconstruction",
    "CVQ paper, App. B, Table 7 (p) and Table 8 (first-k channels)",
    "full reconstruction p = 0 / 0.25: rFID 2.60 / 2.62, PSNR 20.94 / 21.01 (Table 7); first k of 256 "
    "channels, p = 0.25 only: PSNR 16.96 (32), 18.38 (64), 21.01 (256) (Table 8); the paper does not "
    "truncate the p = 0 model",
    "progressive PSNR (300 test images) of cvq-fmnist-drop25 minus cvq-fmnist, averaged over k = 1, 2, "
    "4, 8 of 49 channels; and the full PSNR (2,000 test images) of p = 0 minus p = 0.25",
    _nested_dropout,
    (Check("short_prefix_gain_db", ">", 1.0), Check("full_cost_db", "<", 1.0)),
    runs=("cvq-fmnist", "cvq-fmnist-drop25"), main_job=True,
    shown=("short_prefix_gain_db", "full_cost_db", "psnr_first8_p0", "psnr_first8_p25")))


# ----------------------------------------------------------------------------------------- VCQ
def _entropy_cliff(rows: SeedRows) -> dict[str, Estimate]:
    const = rows.entropy_profile("vcq-constant-fmnist", split="train")
    cosine = rows.entropy_profile("vcq-cosine-fmnist", split="train")
    if const.bound_t_star is None or cosine.bound_t_star is None:
        raise MissingEvidence("a schedule whose capacity never reaches log2 N has no bound t*")
    return {"t_star_constant": Estimate(float(const.t_star)),
            "bound_t_star_constant": Estimate(float(const.bound_t_star)),
            "t_star_excess_constant": Estimate(float(const.t_star - const.bound_t_star)),
            "t_star_cosine": Estimate(float(cosine.t_star)),
            "bound_t_star_cosine": Estimate(float(cosine.bound_t_star)),
            "t_star_excess_cosine": Estimate(float(cosine.t_star - cosine.bound_t_star)),
            "t_star_delay": Estimate(float(cosine.t_star - const.t_star))}


register_claim(Claim(
    "entropy-cliff",
    "On a constant codebook H(x_t | x_<t) over the training split falls to near zero by "
    "t* = ceil(log2 N / log2 K); a growing K_t schedule delays t*",
    "VCQ paper, Sec. 2 (Prop. 1, Eq. 1-2), Table 2, Fig. 2(a)",
    "t* = 2 for a constant K = 16,384 at N = 1.28M; 4 / 5 / 6 for linear / cosine / power K_t "
    "(Table 2, from the capacity formula); measured H below 1 bit by about t = 2 (Fig. 2(a)); "
    "80-90 % per-position usage can delay the cliff",
    "empirical t* (fewest leading tokens leaving at most 1 bit of the sequences' entropy) of the "
    "10,000 training images' token sequences of vcq-constant-fmnist and vcq-cosine-fmnist",
    _entropy_cliff,
    # "by t*": at or before each bound (t* counts positions, so excess < 0.5 means excess <= 0)
    (Check("t_star_excess_constant", "<", 0.5), Check("t_star_excess_cosine", "<", 0.5),
     Check("t_star_delay", ">", 0.5)),
    runs=("vcq-constant-fmnist", "vcq-cosine-fmnist"), main_job=True,
    shown=("t_star_constant", "bound_t_star_constant", "t_star_cosine", "bound_t_star_cosine", "t_star_delay")))


def _probe(rows: SeedRows) -> dict[str, Estimate]:
    cosine = rows.value("vcq-cosine-fmnist", "probe_top1_k10", split="test", binomial=True)
    const = rows.value("vcq-constant-fmnist", "probe_top1_k10", split="test", binomial=True)
    return {"probe_top1_first10_cosine": cosine, "probe_top1_first10_constant": const,
            "probe_gain": cosine - const}


register_claim(Claim(
    "vcq-first-tokens-probe",
    "A linear probe on VCQ's first 10 tokens beats the same probe on a constant codebook's",
    "VCQ paper, Sec. 4.4",
    "ImageNet top-1 on the first 10 tokens: constant 27.12 %, cosine 43.77 %, power 49.42 % (Base "
    "tokenizer)",
    "top-1 accuracy (2,000 test images; binomial standard error) of the linear probe on the first 10 "
    "tokens' code embeddings of vcq-cosine-fmnist minus vcq-constant-fmnist",
    _probe,
    (Check("probe_gain", ">", 0.0),),
    runs=("vcq-constant-fmnist", "vcq-cosine-fmnist"), main_job=True))


def _vcq_ar(rows: SeedRows) -> dict[str, Estimate]:
    cosine = rows.value("ar@vcq-cosine", "gfid_nocfg")
    const = rows.value("ar@vcq-constant", "gfid_nocfg")
    return {"gfid_nocfg_cosine": cosine, "gfid_nocfg_constant": const, "gfid_nocfg_gain": const - cosine}


register_claim(Claim(
    "vcq-ar-without-cfg",
    "The same AR reaches a lower gFID without guidance on VCQ-cosine tokens than on constant-codebook "
    "tokens",
    "VCQ paper, Table 4",
    "gFID without CFG, AR-B: constant 16K 27.98, constant 8K 18.16, cosine 14.80",
    "gFID (150 class-balanced samples against 150 training images; bootstrap standard error) of "
    "ar-fmnist without guidance on vcq-constant-fmnist minus on vcq-cosine-fmnist",
    _vcq_ar,
    (Check("gfid_nocfg_gain", ">", 0.0),),
    runs=("ar@vcq-constant", "ar@vcq-cosine"), main_job=True))


def _cbcfg(rows: SeedRows) -> dict[str, Estimate]:
    plain = rows.value("ar@vcq-cosine", "gfid")
    aware = rows.value("ar@vcq-cosine+cbcfg", "gfid")
    const_plain = rows.value("ar@vcq-constant", "gfid")
    const_aware = rows.value(CBCFG_ON_CONSTANT, "gfid")
    # both samplings of the constant codebook's AR draw with the same seed, so the two sample sets are
    # paired (identical where the two CFG forms agree): the change is judged by the margin alone
    return {"gfid_cosine_cfg": plain, "gfid_codebook_aware_cfg": aware, "gfid_gain_on_vcq": plain - aware,
            "abs_change_on_constant": Estimate(abs(const_aware.value - const_plain.value))}


register_claim(Claim(
    "codebook-aware-cfg",
    "CodebookSize-Aware CFG improves on plain cosine CFG on VCQ tokens and changes nothing on a "
    "constant codebook",
    "VCQ paper, App. C, Tables 8 and 9",
    "VCQ: cosine CFG 7.61 -> CodebookSize-Aware 4.79; constant 16K: 6.43 -> 6.43, constant 8K 5.92 -> "
    "5.87 (AR-B)",
    "gFID (150 samples; bootstrap standard error) of ar-fmnist on vcq-cosine-fmnist with cosine CFG 2.0 "
    "minus with CodebookSize-Aware CFG; the absolute change the same switch makes on vcq-constant-fmnist "
    "(same sampling seed: paired samples, judged by the margin)",
    _cbcfg,
    (Check("gfid_gain_on_vcq", ">", 0.0), Check("abs_change_on_constant", "<", 1.0)),
    runs=("ar@vcq-cosine", "ar@vcq-cosine+cbcfg", "ar@vcq-constant", CBCFG_ON_CONSTANT)))


# ------------------------------------------------------------------------------- channel generators
def _channel_generators(rows: SeedRows) -> dict[str, Estimate]:
    car, ar = rows.value("car@cvq-drop25", "gfid"), rows.value("ar@vq", "gfid")
    masked, maskgit = rows.value("masked@cvq-drop25", "gfid"), rows.value("maskgit@vq", "gfid")
    params = {label: float(rows.run_info(label, "gfid").get("parameters", float("nan")))
              for label in ("car@cvq-drop25", "ar@vq", "masked@cvq-drop25", "maskgit@vq")}
    return {"gfid_gain_car_over_ar": ar - car, "gfid_gain_masked_over_maskgit": maskgit - masked,
            "gfid_car": car, "gfid_ar": ar, "gfid_masked": masked, "gfid_maskgit": maskgit,
            "params_ratio_car_to_ar": Estimate(params["car@cvq-drop25"] / params["ar@vq"]),
            "params_ratio_masked_to_maskgit": Estimate(params["masked@cvq-drop25"] / params["maskgit@vq"]),
            "params_mismatch": Estimate(max(abs(params["car@cvq-drop25"] / params["ar@vq"] - 1),
                                            abs(params["masked@cvq-drop25"] / params["maskgit@vq"] - 1)))}


register_claim(Claim(
    "channel-generators-vs-patch",
    "At the same parameter count (within 10 %), CAR and the masked channel-wise generator on CVQ tokens "
    "reach a lower gFID than AR and MaskGIT on patch tokens",
    "masked channel-wise paper, Tables 2-3; CVQ paper, Table 4",
    "masked channel-wise B 305M: 2.77 at 10 steps vs MaskGIT 227M 6.18 at 8 and LlamaGen-L 343M 3.80 "
    "at 256 (different tokenizers, not a controlled comparison); CVQ Table 4 (GenEval): patch VQ 0.69, "
    "CVQ p = 0 0.62, CVQ p = 0.25 0.74",
    "gFID (150 class-balanced samples; bootstrap standard error) of ar-fmnist on vq-fmnist minus "
    "car-fmnist on cvq-fmnist-drop25, and of masked-fmnist on vq-fmnist minus on cvq-fmnist-drop25, "
    "800 steps each; parameter ratios shown",
    _channel_generators,
    (Check("gfid_gain_car_over_ar", ">", 0.0), Check("gfid_gain_masked_over_maskgit", ">", 0.0),
     Check("params_mismatch", "<", 0.1)),
    runs=("car@cvq-drop25", "ar@vq", "masked@cvq-drop25", "maskgit@vq"), main_job=True,
    shown=("gfid_gain_car_over_ar", "gfid_gain_masked_over_maskgit", "params_ratio_car_to_ar",
           "params_ratio_masked_to_maskgit")))


# ----------------------------------------------------------------------------------------- FQGAN
def _fq_factorized(rows: SeedRows) -> dict[str, Estimate]:
    fq = rows.value(FQ_NO_LOSSES, "psnr", split="test")
    single = rows.value(FQ_SINGLE, "psnr", split="test")
    return {"psnr_factorized": fq, "psnr_single_2048": single, "psnr_gain": fq - single,
            "usage_factorized": mean_of([rows.value(FQ_NO_LOSSES, f"codebook_usage_f{i}", split="test")
                                         for i in (0, 1)]),
            "usage_single_2048": rows.value(FQ_SINGLE, "codebook_usage", split="test")}


register_claim(Claim(
    "fq-factorized-vs-single",
    "Two factorized sub-codebooks beat a single codebook of the same total size",
    "FQGAN paper, Table 3",
    "rFID / PSNR: VQGAN 16,384 3.71 / 20.56; VQGAN 32,768 3.60 / 20.56; FQ 16,384 x 2 (no losses) "
    "2.00 / 22.21 (ImageNet, 10 epochs)",
    "test PSNR (2,000 images; bootstrap standard error) of fq-dual-fmnist's backbone with 2 x 1,024 "
    "sub-codebooks minus with one codebook of 2,048, both without the disentanglement and representation "
    "losses (Table 3's rows without them)",
    _fq_factorized,
    (Check("psnr_gain", ">", 0.0),),
    runs=(FQ_NO_LOSSES, FQ_SINGLE)))


def _fq_disentangle(rows: SeedRows) -> dict[str, Estimate]:
    with_loss = rows.value("fq-dual-fmnist", "subcode_similarity", split="test")
    without = rows.value(FQ_NO_DISENTANGLE, "subcode_similarity", split="test")
    return {"subcode_similarity_with_loss": with_loss, "subcode_similarity_without": without,
            "similarity_drop": without - with_loss}


register_claim(Claim(
    "fq-disentanglement-loss",
    "FQGAN's disentanglement loss lowers the similarity between the sub-codes of a position",
    "FQGAN paper, Sec. 3.2.1 (Eq. 7) and Table 3",
    "the sub-code similarity is not reported; Table 3: adding the loss takes rFID 2.00 -> 1.84",
    "squared cosine similarity of the two sub-codes of a position (2,000 test images) of fq-dual-fmnist "
    "trained without the loss minus with it (lambda1 = 0.1)",
    _fq_disentangle,
    (Check("similarity_drop", ">", 0.0),),
    runs=("fq-dual-fmnist", FQ_NO_DISENTANGLE)))


def _fq_representation(rows: SeedRows) -> dict[str, Estimate]:
    probe = {(run, f): rows.value(run, f"probe_top1_all_f{f}", split="test", binomial=True)
             for run in (FQ_NO_DISENTANGLE, FQ_NO_LOSSES) for f in (0, 1)}
    return {"probe_supervised_with_loss": probe[FQ_NO_DISENTANGLE, 1],
            "probe_supervised_without": probe[FQ_NO_LOSSES, 1],
            "probe_gain": probe[FQ_NO_DISENTANGLE, 1] - probe[FQ_NO_LOSSES, 1],
            "probe_other_with_loss": probe[FQ_NO_DISENTANGLE, 0], "probe_other_without": probe[FQ_NO_LOSSES, 0]}


register_claim(Claim(
    "fq-representation-loss",
    "FQGAN's representation loss makes the teacher-supervised sub-codebook carry more class information",
    "FQGAN paper, Sec. 3.2.2 (Eq. 8) and Fig. 4",
    "no number: Fig. 4's t-SNE shows the CLIP-supervised sub-codebook 2's codes clustered by class and "
    "sub-codebook 1's not (4 ImageNet classes)",
    "linear-probe top-1 (3,000 training images, 2,000 test; binomial standard error) on the pooled codes of "
    "the second sub-codebook alone (the one the teacher supervises; fq-dual-fmnist's teacher is AlexNet, "
    "the packaged stand-in for CLIP) of fq-dual-fmnist trained with the representation loss minus without "
    "it, both without the disentanglement loss; the first sub-codebook's probes shown beside. With one seed "
    "the error is the test images', not the training runs'",
    _fq_representation,
    (Check("probe_gain", ">", 0.0),),
    runs=(FQ_NO_DISENTANGLE, FQ_NO_LOSSES),
    shown=("probe_supervised_with_loss", "probe_supervised_without", "probe_gain", "probe_other_with_loss",
           "probe_other_without")))
