"""The tokenizer training loss, one module as LlamaGen's ``VQLoss`` (Sun et al. 2024, Sec. 2.1):
pixel reconstruction (L1/L2), LPIPS perceptual loss (Zhang et al. 2018), the tokenizer's own
quantization losses, and an adversarial loss on a PatchGAN or StyleGAN discriminator (hinge or
non-saturating) weighted by the VQGAN adaptive weight (Esser et al. 2021, Eq. 7) after a warm-up of
``disc_start`` steps, with optional LeCam regularization of the discriminator (Tseng et al. 2021).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.arguments import DECAY, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT
from harness.core.contracts import Tokenizer, TokenizerOutput
from harness.core.distributed import is_multi_process
from harness.models.discriminators import build_discriminator
from harness.training.optim import chain_post_init, check_settings


@dataclass(frozen=True)
class VQLossConfig:
    pixel_loss: Literal["l1", "l2"] = "l2"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0       # LPIPS; 0 disables
    lpips_net: Literal["alex", "vgg"] = "vgg"
    disc_weight: float = 0.5             # 0 disables the GAN (no discriminator is built)
    disc_start: int = 0                  # GAN warm-up: steps trained without the adversarial loss
    disc_loss: Literal["hinge", "non-saturating"] = "hinge"
    disc_arch: Literal["patchgan", "stylegan"] = "patchgan"
    disc_layers: int = 3                 # PatchGAN depth
    disc_channels: int = 64
    lecam_weight: float = 0.0            # LeCam regularization of the discriminator; 0 disables
    lecam_decay: float = 0.999
    adaptive_disc_weight: bool = True

    RULES = {"pixel_weight": NON_NEGATIVE, "perceptual_weight": NON_NEGATIVE, "disc_weight": NON_NEGATIVE,
             "disc_start": NON_NEGATIVE_INT, "disc_layers": POSITIVE_INT, "disc_channels": POSITIVE_INT,
             "lecam_weight": NON_NEGATIVE, "lecam_decay": DECAY}

    def __post_init__(self):
        check_settings(self, VQLossConfig.RULES)
        chain_post_init(VQLossConfig, self)


def pixel_loss(kind: str, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(recon, x) if kind == "l1" else F.mse_loss(recon, x)


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


class LeCam(nn.Module):
    """LeCam regularization (Tseng et al., CVPR 2021): keeps D(real) and D(fake) near EMAs of each
    other, R = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2]. The EMAs are buffers, so
    they are checkpointed with the discriminator and a resumed run continues them exactly."""

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            means = torch.stack([logits_real.detach().mean(), logits_fake.detach().mean()]).float()
            if is_multi_process():
                torch.distributed.all_reduce(means)          # one EMA on every rank
                means /= torch.distributed.get_world_size()
            self.ema_real.lerp_(means[0], 1 - self.decay)
            self.ema_fake.lerp_(means[1], 1 - self.decay)
        return (F.relu(logits_real - self.ema_fake).pow(2).mean()
                + F.relu(self.ema_real - logits_fake).pow(2).mean())


class VQLoss(nn.Module):
    """Every loss term of tokenizer training and the modules they need (discriminator, LeCam EMAs,
    LPIPS network). The loop calls ``generator_loss`` for the tokenizer's step and, once
    ``gan_active``, ``discriminator_loss`` for the discriminator's; each returns the loss to
    minimise and the named terms to log."""

    def __init__(self, cfg: VQLossConfig, in_channels: int, resolution: int):
        super().__init__()
        self.cfg = cfg
        # built in this order: the discriminator's initial weights come from the seeded RNG
        self.discriminator = (build_discriminator(cfg.disc_arch, in_channels, resolution, cfg.disc_channels,
                                                  cfg.disc_layers) if cfg.disc_weight > 0 else None)
        self.lecam = LeCam(cfg.lecam_decay) if self.discriminator is not None and cfg.lecam_weight > 0 else None
        self.perceptual = None
        if cfg.perceptual_weight > 0:
            from harness.models.lpips import load_lpips
            self.perceptual = load_lpips(cfg.lpips_net)

    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.cfg.disc_start

    def generator_loss(self, x: torch.Tensor, out: TokenizerOutput, tokenizer: Tokenizer,
                       step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The tokenizer's loss on batch ``x`` given its forward output ``out``."""
        cfg, recon = self.cfg, out.reconstruction
        logs = {"pixel": pixel_loss(cfg.pixel_loss, recon.float(), x)}
        rec_loss = cfg.pixel_weight * logs["pixel"]
        if self.perceptual is not None:
            logs["lpips"] = self.perceptual(recon.float(), x).mean()
            rec_loss = rec_loss + cfg.perceptual_weight * logs["lpips"]
        logs.update({k: v.float() for k, v in out.losses.items()})
        total = rec_loss + sum(out.losses.values())
        if self.gan_active(step):
            disc = self.discriminator
            disc.requires_grad_(False)       # this step trains the tokenizer only
            logs["gan_g"] = generator_loss(cfg.disc_loss, disc(recon).float())
            weight = cfg.disc_weight * out.gan_weight_scale
            if cfg.adaptive_disc_weight:
                logs["adaptive_w"] = adaptive_weight(rec_loss, logs["gan_g"], tokenizer.last_layer_weight())
                weight = weight * logs["adaptive_w"]
            total = total + weight * logs["gan_g"]
            disc.requires_grad_(True)
        return total, logs

    def discriminator_loss(self, discriminator: nn.Module, x: torch.Tensor,
                           recon: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss on real ``x`` and detached reconstructions. ``discriminator`` is
        ``self.discriminator`` or its DDP wrapper (which averages its gradients over processes)."""
        logits = discriminator(torch.cat([x, recon.detach()]))
        real, fake = logits.float().chunk(2)
        logs = {"gan_d": discriminator_loss(self.cfg.disc_loss, real, fake)}
        total = logs["gan_d"]
        if self.lecam is not None:
            logs["lecam"] = self.lecam(real, fake)
            total = total + self.cfg.lecam_weight * logs["lecam"]
        return total, logs
