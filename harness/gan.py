"""Adversarial training pieces: PatchGAN discriminator, hinge / non-saturating losses, and the
VQGAN adaptive weight (Esser et al. 2021, eq. 7).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchGAN(nn.Module):
    """pix2pix's N-layer PatchGAN (Isola et al. 2017) as VQGAN uses it: 4x4 convs, BatchNorm, LeakyReLU."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():       # DCGAN init, as taming-transformers does
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.main(x)


def discriminator_loss(kind: str, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def generator_loss(kind: str, logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean() if kind == "hinge" else F.softplus(-logits_fake).mean()


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """||grad rec|| / ||grad gan|| at the decoder's last layer, so neither loss swamps the other."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()
