"""Token generators (issue 5): each module registers its presets in harness.registry.GENERATORS.

Registry metadata every generator preset carries (tests/test_generators.py reads it):
``family``; ``scale`` ("tiny" | "small" | "paper"); ``layouts``: the layout kinds it supports, a tuple
of "spatial", "channel", "latent" (one code per position; "latent" presets are also tested on a
variable K_t layout) or ("factorized",) (k sub-codes per position); ``kv_cache=True`` when
``SamplerConfig.kv_cache`` switches an incremental path (tested against full recomputation); paper
presets add ``paper_layout`` and ``paper_conditioning`` (built on the meta device) and, where the count
is matched, ``paper_params``.
"""
