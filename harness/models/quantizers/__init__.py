"""Quantizers: one module each, behind the interface of ``base.Quantizer``.

- ``vq``: nearest-code vector quantization (VQ-VAE / VQGAN, LlamaGen's l2-normalized codes, rotation trick)
- ``channel``: CVQ's channel-wise lookup (one code per latent channel map, masked loss for dropped channels)
- ``factorized``: FQGAN's k independent sub-codebooks per position
- ``fsq``, ``lfq``, ``simvq``, ``rvq``: FSQ, LFQ, SimVQ and residual VQ from vector-quantize-pytorch
- ``lookup``: the bounded-memory nearest-code search the codebook quantizers share
"""
