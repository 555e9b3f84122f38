"""The FID Inception graph rebuilt as an eager module with batch norm folded into the convolutions.

Same network, same weights as the TorchScript graph of ``harness.models.teachers.load_fid_inception``
(layer for layer, in the graph's order), built because the graph is slow on CPU for two reasons:

- every Inception block calls ``contiguous()`` on each branch before concatenating, so a channels-last
  input is converted back to NCHW in every block (channels-last convolutions are faster with oneDNN);
- each convolution is followed by a separate batch-norm pass (TF's batch norm: no scale, eps 1e-3).

Here each convolution carries its batch norm (``w * s`` and ``beta - mean * s`` with
``s = 1 / sqrt(var + eps)``, folded in float64 then rounded) and runs channels-last end to end. The
pool3 features equal the graph's to float rounding (about 1e-6 of their largest value; the 1e-4 bound is
tested in tests/test_fidelity.py, the speed measured by ``benchmarks/inception_speed.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TF_BATCH_NORM_EPS = 1e-3
SPATIAL_BLOCK = 6           # index of the graph's mixed_6 (torchvision's Mixed_6d) in ``FoldedInception.blocks``
SPATIAL_CHANNELS = 7        # sFID keeps the first 7 of mixed_6/conv's 192 channels: 7 x 17 x 17 = 2023 features


class ConvBNReLU(nn.Module):
    """One graph ``Conv2dLayer`` (conv, batch norm without scale, ReLU) with the batch norm folded."""

    def __init__(self, layer):
        super().__init__()
        scale = (layer.var.double() + TF_BATCH_NORM_EPS).rsqrt()
        weight = layer.weight.double() * scale[:, None, None, None]
        bias = layer.beta.double() - layer.mean.double() * scale
        out_ch, in_ch, kh, kw = weight.shape
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=layer.stride, padding=layer.padding)
        with torch.no_grad():
            self.conv.weight.copy_(weight.float())
            self.conv.bias.copy_(bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


def _chain(parent, names: list[str]) -> nn.Sequential:
    return nn.Sequential(*(ConvBNReLU(getattr(parent, n)) for n in names))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)      # TF's SAME average pooling


def _max_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, 2)


def _convs(n: int) -> list[str]:
    """The graph's names of a branch's n convolutions: conv, conv_1, ..., conv_{n-1}."""
    return ["conv"] + [f"conv_{i}" for i in range(1, n)]


class _Mixed(nn.Module):
    """An Inception block of parallel branches on one input, concatenated, then its pool branch: a 1x1
    convolution of the average-pooled input (Mixed_5b..d, 6b..e), or in a grid reduction (Mixed_6a, 7a)
    the input itself max-pooled."""

    def __init__(self, branches: list[nn.Module], pool_conv: nn.Module | None = None):
        super().__init__()
        self.branches, self.pool_conv = nn.ModuleList(branches), pool_conv

    def forward(self, x):
        pooled = _max_pool_reduce(x) if self.pool_conv is None else self.pool_conv(_avg_pool(x))
        return torch.cat([b(x) for b in self.branches] + [pooled], 1)


def _block_a(g) -> _Mixed:                         # Mixed_5b/c/d: 1x1, 5x5, double 3x3
    return _Mixed([ConvBNReLU(g.conv), _chain(g.tower, _convs(2)), _chain(g.tower_1, _convs(3))],
                  ConvBNReLU(g.tower_2.conv))


def _block_b(g) -> _Mixed:                         # Mixed_6a (grid reduction): 3x3, double 3x3
    return _Mixed([ConvBNReLU(g.conv), _chain(g.tower, _convs(3))])


def _block_c(g) -> _Mixed:                         # Mixed_6b..e: 1x1, factorized 7x7, double 7x7
    return _Mixed([ConvBNReLU(g.conv), _chain(g.tower, _convs(3)), _chain(g.tower_1, _convs(5))],
                  ConvBNReLU(g.tower_2.conv))


def _block_d(g) -> _Mixed:                         # Mixed_7a (grid reduction): 3x3, 7x7 then 3x3
    return _Mixed([_chain(g.tower, _convs(2)), _chain(g.tower_1, _convs(4))])


class _BlockE(nn.Module):                          # Mixed_7b/c (expanded filter bank)
    def __init__(self, g, max_pool: bool):
        super().__init__()
        self.b1 = ConvBNReLU(g.conv)
        self.b3 = ConvBNReLU(g.tower_conv)
        self.b3_a, self.b3_b = ConvBNReLU(g.tower_mixed_conv), ConvBNReLU(g.tower_mixed_conv_1)
        self.b3dbl = _chain(g, ["tower_1_conv", "tower_1_conv_1"])
        self.b3dbl_a, self.b3dbl_b = ConvBNReLU(g.tower_1_mixed_conv), ConvBNReLU(g.tower_1_mixed_conv_1)
        self.pool = ConvBNReLU(g.tower_2_conv)
        self.max_pool = max_pool                   # the FID graph's last block max-pools (the TF graph's quirk)

    def forward(self, x):
        a, b = self.b3(x), self.b3dbl(x)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.b1(x), self.b3_a(a), self.b3_b(a), self.b3dbl_a(b), self.b3dbl_b(b),
                          self.pool(pooled)], 1)


class FoldedInception(nn.Module):
    """``graph`` (the FID TorchScript, weights already loaded) as an eager, batch-norm-folded module with
    channels-last weights: N x 3 x 299 x 299 in the graph's input range -> pool3 (N x 2048). Give it a
    channels-last input (``x.contiguous(memory_format=torch.channels_last)``) to run channels-last throughout."""

    def __init__(self, graph: torch.jit.ScriptModule):
        super().__init__()
        g = graph.net.layers
        self.stem_a = _chain(g, _convs(3))
        self.stem_b = _chain(g, ["conv_3", "conv_4"])
        self.blocks = nn.Sequential(
            _block_a(g.mixed), _block_a(g.mixed_1), _block_a(g.mixed_2), _block_b(g.mixed_3),
            _block_c(g.mixed_4), _block_c(g.mixed_5), _block_c(g.mixed_6), _block_c(g.mixed_7),
            _block_d(g.mixed_8), _BlockE(g.mixed_9, max_pool=False), _BlockE(g.mixed_10, max_pool=True))
        self.to(graph.net.layers.conv.weight.device, memory_format=torch.channels_last)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _max_pool_reduce(self.stem_b(_max_pool_reduce(self.stem_a(x))))
        return self.blocks(x).mean((2, 3))         # pool2: 8 x 8 average pooling, then flatten

    def forward_with_spatial(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool3, spatial) from one pass: ``spatial`` is the graph's ``mixed_6/conv:0`` (Mixed_6d's 1x1
        branch after its ReLU, 192 x 17 x 17), first ``SPATIAL_CHANNELS`` channels, flattened: the
        features of sFID (Nash et al. 2021) as the ADM evaluator takes them."""
        seen = []
        hook = self.blocks[SPATIAL_BLOCK].branches[0].register_forward_hook(lambda m, i, out: seen.append(out))
        try:
            pool3 = self(x)
        finally:
            hook.remove()
        # ADM flattens TF's N x 17 x 17 x 7 (height, width, channel): the order its reference batches'
        # precomputed mu_s / sigma_s use
        return pool3, seen[0][:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
