"""The labels of the runs the claims read beyond the default suite's (the suite ``claims`` in
harness.suites trains them): plain constants, so that harness.suites can name them without importing
the claims."""
from __future__ import annotations

SWEEP_K = (256, 1024, 4096, 16384)     # the codebook sizes of the usage sweep (CVQ Table 3: 1,024 to 65,536)
SWEEP_FAMILIES = (("cvq", "cvq-fmnist"), ("vq-d49", "vq-fmnist-d49"))     # (label prefix, preset)
FQ_SINGLE = "fq-single-k2048-fmnist"   # fq-dual-fmnist's backbone with one codebook of 2 x 1,024 codes, no losses
FQ_NO_DISENTANGLE = "fq-dual-no-disentangle-fmnist"   # fq-dual-fmnist without the disentanglement loss
FQ_NO_LOSSES = "fq-dual-no-losses-fmnist"             # ... without it and without the representation loss
CBCFG_ON_CONSTANT = "ar@vcq-constant+cbcfg"


def sweep_label(family: str, k: int) -> str:
    """The usage sweep's run of ``family`` (cvq, vq-d49) at codebook size ``k``; K = 1,024 of CVQ is
    the default suite's ``cvq-fmnist``."""
    return "cvq-fmnist" if (family, k) == ("cvq", 1024) else f"{family}-fmnist-k{k}"
