"""The papers' training recipes, one value per line with its source (harness.core.recipes).

The four papers (CVQ/CAR, masked channel-wise generation, FQGAN/FAR, VCQ) are cited by section or
table; our copies lost many numbers of the CVQ and VCQ papers (a sentence names a value whose digits are
blank), and those values, like the ones a paper never states, are ``assumed(...)`` with where they
come from instead: the code of the recipe a paper says it follows (LlamaGen's training scripts, the
TiTok/RAR configs of bytedance/1d-tokenizer), or else the harness default. LlamaGen's own tokenizer
recipe (the ``vq-f16/f8-imagenet`` presets) cites LlamaGen's training code, read at
FoundationVision/LlamaGen (tokenizer/tokenizer_image/vq_train.py, vq_loss.py;
autoregressive/train/train_c2i.py). Epochs become steps by ``imagenet_steps`` (ImageNet-1k, whole
global batches per epoch), so a run on another dataset or batch re-derives ``steps`` and
``disc_start`` with ``--set``.
"""
from __future__ import annotations

from harness.core.recipes import Recipe, assumed, imagenet_steps

_HARNESS = "the harness default"


def _blank(what: str, instead: str = _HARNESS) -> object:
    return assumed(f"{what} is blank in our copy of the paper; {instead}")


# ------------------------------------------------------------------ LlamaGen (its code, the presets vq-f16/f8)
_LG_VQ = "LlamaGen code, tokenizer/tokenizer_image/vq_train.py"
_LG_LOSS = "LlamaGen code, tokenizer/tokenizer_image/vq_loss.py"
LLAMAGEN_TOKENIZER = Recipe.of(
    ("optimizer", "adam", f"{_LG_VQ}: torch.optim.Adam"),
    ("beta1", "0.9", f"{_LG_VQ}: --beta1"),
    ("beta2", "0.95", f"{_LG_VQ}: --beta2"),
    ("lr", "1e-4", f"{_LG_VQ}: --lr"),
    ("lr_schedule", "constant", f"{_LG_VQ}: no scheduler"),
    ("weight_decay", "0", f"{_LG_VQ}: Adam gets no weight decay (its --weight-decay is unused)"),
    ("grad_clip", "1.0", f"{_LG_VQ}: --max-grad-norm"),
    ("global_batch_size", "128", f"{_LG_VQ}: --global-batch-size"),
    ("steps", imagenet_steps(40, 128), f"{_LG_VQ}: --epochs 40 at batch 128 on ImageNet-1k"),
    ("precision", "bf16", f"{_LG_VQ}: --mixed-precision"),
    ("hflip", "true", f"{_LG_VQ}: RandomHorizontalFlip"),
    ("pixel_loss", "l2", f"{_LG_VQ}: --reconstruction-loss"),
    ("pixel_weight", "1.0", f"{_LG_VQ}: --reconstruction-weight"),
    ("perceptual_weight", "1.0", f"{_LG_VQ}: --perceptual-weight"),
    ("disc_arch", "patchgan", f"{_LG_VQ}: --disc-type"),
    ("disc_loss", "hinge", f"{_LG_VQ}: --disc-loss, --gen-loss"),
    ("disc_weight", "0.5", f"{_LG_VQ}: --disc-weight"),
    ("adaptive_disc_weight", "false", f"{_LG_LOSS}: disc_adaptive_weight=False"),
    ("disc_start", "20000", f"{_LG_VQ}: --disc-start"),
    notes=("random cropping (random_crop_arr): images are loaded at the preset's resolution, only the flip "
           "is applied",
           "LlamaGen also scales the discriminator's own loss by disc_weight; under Adam that scale barely "
           "changes its updates, and the harness does not apply it"))


# ------------------------------------------------------------------ taming-transformers VQGAN (its code, the preset
# vqgan-taming-f16-imagenet). The released f16-16384 model's own config (configs/model.yaml beside
# ckpts/last.ckpt in its heibox folder) was not read offline; its loss settings are taken as third-party
# copies of it quote them, its batch from the repository's configs/imagenet_vqgan.yaml (the f16-1024
# model's): both assumed
_TM = "taming-transformers code (CompVis/taming-transformers, commit 3ba01b2)"
_TM_VQGAN = f"{_TM}, taming/models/vqgan.py VQModel"
_TM_LOSS = f"{_TM}, taming/modules/losses/vqperceptual.py VQLPIPSWithDiscriminator"


def _taming_release(what: str) -> object:
    return assumed(f"the released model's configs/model.yaml as third-party copies quote it (the release itself "
                   f"was not read offline): {what}")


def _taming_1024(what: str) -> object:
    return assumed(f"configs/imagenet_vqgan.yaml, the repository's f16-1024 config (the f16-16384 model's own "
                   f"config was not read offline): {what}")


TAMING_VQGAN = Recipe.of(
    ("optimizer", "adam", f"{_TM_VQGAN}.configure_optimizers: torch.optim.Adam"),
    ("beta1", "0.5", f"{_TM_VQGAN}.configure_optimizers: betas=(0.5, 0.9)"),
    ("beta2", "0.9", f"{_TM_VQGAN}.configure_optimizers: betas=(0.5, 0.9)"),
    ("weight_decay", "0", f"{_TM_VQGAN}.configure_optimizers: no weight decay"),
    ("lr_schedule", "constant", f"{_TM_VQGAN}.configure_optimizers: no scheduler"),
    ("global_batch_size", "12", _taming_1024("batch_size 12 per GPU; the README's training command runs on one "
                                             "GPU (--gpus 0,)")),
    ("lr", "5.4e-5", _taming_release("base_learning_rate 4.5e-6 (as in configs/imagenet_vqgan.yaml), which "
                                     "main.py multiplies by GPUs x batch x accumulation: 4.5e-6 x 12")),
    ("grad_clip", "0", assumed("main.py sets no gradient clipping (Lightning's default: none)")),
    ("precision", "fp32", assumed("main.py sets no precision (Lightning's default: 32-bit)")),
    ("hflip", "false", f"{_TM}, taming/data/base.py ImagePaths: rescale and crop, no flip"),
    ("pixel_loss", "l1", f"{_TM_LOSS}: torch.abs(inputs - reconstructions)"),
    ("pixel_weight", "1.0", f"{_TM_LOSS}: the L1 term is added unweighted"),
    ("perceptual_weight", "1.0", f"{_TM_LOSS}: perceptual_weight=1.0"),
    ("lpips_net", "vgg", f"{_TM}, taming/modules/losses/lpips.py: LPIPS on VGG16"),
    ("disc_arch", "patchgan", f"{_TM_LOSS}: NLayerDiscriminator (PatchGAN)"),
    ("disc_layers", "2", _taming_release("disc_num_layers 2 (the class default and configs/imagenet_vqgan.yaml: 3)")),
    ("disc_channels", "64", f"{_TM_LOSS}: disc_ndf=64"),
    ("disc_loss", "hinge", f"{_TM_LOSS}: disc_loss='hinge'"),
    ("adaptive_disc_weight", "true", f"{_TM_LOSS}.calculate_adaptive_weight"),
    ("disc_weight", "0.75", _taming_release("disc_weight 0.75 (configs/imagenet_vqgan.yaml: 0.8)")),
    ("disc_start", "0", _taming_release("disc_start 0 (configs/imagenet_vqgan.yaml: 250001)")),
    notes=("the training length is not stated in the repository or the released config: set steps with --set",
           "random crops after resizing the short side (taming/data/base.py, ImageNetTrain's random_crop): "
           "images are loaded at the preset's resolution",
           "taming's VectorQuantizer2 (legacy=True) weights the commitment term (the gradient to the encoder) by "
           "1 and the codebook term by beta = 0.25, the reverse of the harness's VQ; the forward pass is the same",
           "the preset exists to import the released weights (vqbench import taming-vqgan-f16-16384)"))


def _llamagen(what: str) -> object:
    return assumed(f"FQGAN Sec. 4.1 adapts LlamaGen's tokenizer schedule; {_LG_VQ}: {what}")


# ------------------------------------------------------------------ CVQ / CAR ("Channel-wise Vector Quantization")
CVQ_TOKENIZER = Recipe.of(
    ("optimizer", "adam", "CVQ paper, Sec. 4.1 (Training Setup): Adam"),
    ("beta1", "0.9", _blank("Sec. 4.1's Adam beta1")),
    ("beta2", "0.95", _blank("Sec. 4.1's Adam beta2")),
    ("lr", "1e-4", _blank("Sec. 4.1's learning rate")),
    ("lr_schedule", "constant", assumed("Sec. 4.1 gives one rate and no schedule; constant, as VQGAN trains "
                                        "(Sec. 3.1 follows VQGAN)")),
    ("weight_decay", "0", _blank("Sec. 4.1's weight decay", "none, the harness default")),
    ("global_batch_size", "256", "CVQ paper, Sec. 4.1: global batch 256"),
    ("steps", imagenet_steps(100, 256), "CVQ paper, Sec. 4.1: 100 epochs at batch 256 on ImageNet-1k"),
    ("hflip", "false", assumed("no augmentation is stated")),
    ("pixel_loss", "l1", assumed("Sec. 3.1 names a pixel-wise loss following VQGAN, whose pixel loss is L1")),
    ("pixel_weight", "1.0", assumed("not stated; VQGAN's 1")),
    ("perceptual_weight", "1.0", assumed("Sec. 3.1 names LPIPS without a weight; VQGAN's 1")),
    ("disc_arch", "patchgan", "CVQ paper, Sec. 3.1: PatchGAN discriminator"),
    ("disc_loss", "hinge", assumed("not stated; VQGAN's hinge loss")),
    ("disc_weight", "0.5", _blank("App. B's base GAN weight lambda (Eq. 8)")),
    ("adaptive_disc_weight", "true", assumed("Sec. 3.1 follows VQGAN, whose GAN weight is adaptive (Esser et "
                                             "al., Eq. 7); App. B's sigmoid scales it per active-channel count")),
    ("disc_start", "0", assumed("not stated; the discriminator trains from the first step")),
    notes=("the per-k sigmoid GAN weight of nested dropout (App. B, Eq. 8) is the tokenizer's own "
           "(tokenizers/cvq.py), not a training setting",))

# The VQ baselines of Tables 1 and 3 ("Vanilla VQ"): Sec. 4 compares them with CVQ at identical lookup
# complexity, memory and training overhead; its training setup is the one Sec. 4.1 gives for CVQ
CVQ_VQ_BASELINE = CVQ_TOKENIZER + Recipe(notes=(
    "the CVQ paper's VQ baselines (Tables 1, 3) train under its CVQ setup (Sec. 4: a strictly fair "
    "comparison); the Sec. 4.1 values above are applied to them",))

CAR = Recipe.of(
    ("optimizer", "adamw", "CVQ paper, App. E: AdamW in both stages"),
    ("beta1", "0.9", _blank("App. E's beta1")),
    ("beta2", "0.95", _blank("App. E's beta2")),
    ("weight_decay", "0.05", _blank("App. E's weight decay", "the harness's generator default")),
    ("lr", "3e-4", _blank("App. E's stage-II learning rate", "the harness's generator default")),
    notes=("stage I (App. E: projector and head only, backbone frozen) has its own LR, blank in our copy, "
           "and no stated length: --set stage1_steps=N --set stage1_lr=LR",
           "the training data (Sec. 4.2: 80M text-image pairs; App. E: their sources) and the batch size and "
           "length are not stated"))


# ------------------------------------------------------------------ masked channel-wise generation
_MASKED = "masked-generation paper"
MASKGEN_TOKENIZER = Recipe.of(
    ("optimizer", "adam", f"{_MASKED}, Sec. 4.1 (Training): Adam, following SeQ-GAN"),
    ("beta1", "0.9", assumed(f"not stated; {_HARNESS}")),
    ("beta2", "0.95", assumed(f"not stated; {_HARNESS}")),
    ("lr", "1e-4", f"{_MASKED}, Sec. 4.1: initial learning rate 1e-4"),
    ("lr_schedule", "cosine", f"{_MASKED}, Sec. 4.1: cosine decay"),
    ("min_lr", "5e-5", f"{_MASKED}, Sec. 4.1: decays to 5e-5"),
    ("weight_decay", "0", assumed("not stated")),
    ("global_batch_size", "256", f"{_MASKED}, Sec. 4.1: total batch 256"),
    ("steps", imagenet_steps(300, 256), f"{_MASKED}, Sec. 4.1: 300 epochs at batch 256 on ImageNet-1k"),
    ("hflip", "false", assumed("no augmentation is stated")),
    ("pixel_loss", "l2", f"{_MASKED}, Sec. 3.2: L_mse"),
    ("perceptual_weight", "1.0", assumed("Sec. 3.2 uses a perceptual loss without a weight; the harness default")),
    ("disc_arch", "stylegan", f"{_MASKED}, Sec. 3.2 and 4.1: StyleGAN discriminator"),
    ("disc_loss", "hinge", assumed(f"not stated; {_HARNESS}")),
    ("disc_weight", "0.5", assumed(f"not stated; {_HARNESS}")),
    ("adaptive_disc_weight", "true", assumed(f"not stated; {_HARNESS} (VQGAN's adaptive weight)")),
    ("disc_start", imagenet_steps(10, 256), f"{_MASKED}, Sec. 4.1: the discriminator starts after 10 epochs "
                                            "(at batch 256 on ImageNet-1k)"),
    ("lecam_weight", "0.001", assumed("Sec. 3.2 uses LeCam regularization without its weight; the open TiTok "
                                      "tokenizer config's (bytedance/1d-tokenizer)")),
    notes=("the StyleGAN discriminator is not trained in fp16 (Sec. 4.1): keep precision fp32 or bf16",
           "no entropy regularization (Sec. 3.2): the harness's CVQ has none"))

MASKGEN_GENERATOR = Recipe.of(
    ("optimizer", "adamw", f"{_MASKED}, Sec. 4.1: AdamW"),
    ("beta1", "0.9", f"{_MASKED}, Sec. 4.1: beta1 = 0.9"),
    ("beta2", "0.96", f"{_MASKED}, Sec. 4.1: beta2 = 0.96"),
    ("lr", "4e-4", f"{_MASKED}, Sec. 4.1: initial learning rate 4e-4"),
    ("lr_schedule", "cosine", assumed("no schedule is stated (an 'initial' rate implies a decay); the harness's "
                                      "cosine")),
    ("min_lr", "0", assumed("not stated")),
    ("weight_decay", "0.05", assumed("not stated; the harness's generator default")),
    ("global_batch_size", "1024", f"{_MASKED}, Sec. 4.1: total batch 1024"),
    ("steps", imagenet_steps(1200, 1024), f"{_MASKED}, Sec. 4.1: 1200 epochs at batch 1024 on ImageNet-1k"),
    notes=("text-to-image (Sec. 4.1): learning rate 1e-4 and batch 256 for 3000 epochs of MS-COCO "
           "(--set lr=1e-4 --set global_batch_size=256 --set steps=...)",))


# ------------------------------------------------------------------ FQGAN / FAR
FQGAN_TOKENIZER = Recipe.of(
    ("optimizer", "adam", _llamagen("torch.optim.Adam")),
    ("beta1", "0.9", _llamagen("--beta1")),
    ("beta2", "0.95", _llamagen("--beta2")),
    ("lr", "2e-4", "FQGAN paper, Sec. 4.1: constant learning rate 2e-4"),
    ("lr_schedule", "constant", "FQGAN paper, Sec. 4.1: constant learning rate"),
    ("weight_decay", "0", _llamagen("no weight decay")),
    ("grad_clip", "1.0", _llamagen("--max-grad-norm")),
    ("global_batch_size", "256", "FQGAN paper, Sec. 4.1: global batch 256 on 8 A100s"),
    ("steps", imagenet_steps(40, 256), "FQGAN paper, App. B, Table 5: 40 epochs (Table 1's rFID 0.94 / 0.76) "
                                       "at batch 256 on ImageNet-1k"),
    ("precision", "bf16", _llamagen("--mixed-precision")),
    ("hflip", "true", _llamagen("RandomHorizontalFlip")),
    ("pixel_loss", "l2", _llamagen("--reconstruction-loss")),
    ("pixel_weight", "1.0", _llamagen("--reconstruction-weight")),
    ("perceptual_weight", "1.0", _llamagen("--perceptual-weight")),
    ("disc_arch", "patchgan", "FQGAN paper, Sec. 3.1: patch-based discriminator"),
    ("disc_loss", "hinge", _llamagen("--disc-loss, --gen-loss")),
    ("disc_weight", "0.5", _llamagen("--disc-weight")),
    ("adaptive_disc_weight", "false", _llamagen("vq_loss.py's disc_adaptive_weight=False")),
    ("disc_start", "20000", _llamagen("--disc-start")),
    notes=("random cropping (LlamaGen's random_crop_arr): only the flip is applied",
           "lambda1 = 0.1 and lambda2 = 0.5 (Sec. 4.1) are the preset's model settings"))

_LG_AR = "LlamaGen code, autoregressive/train/train_c2i.py"


def _llamagen_ar(what: str) -> object:
    return assumed(f"FAR is a Llama-style AR following LlamaGen (Sec. 4.1); {_LG_AR}: {what}")


FAR = Recipe.of(
    ("optimizer", "adamw", _llamagen_ar("AdamW")),
    ("beta1", "0.9", _llamagen_ar("--beta1")),
    ("beta2", "0.95", _llamagen_ar("--beta2")),
    ("lr", "2e-4", "FQGAN paper, Sec. 4.1: constant learning rate 2e-4"),
    ("lr_schedule", "constant", "FQGAN paper, Sec. 4.1: constant learning rate"),
    ("weight_decay", "0.05", _llamagen_ar("--weight-decay")),
    ("decay_norms_and_biases", "false", _llamagen_ar("only parameters of 2+ dimensions decay")),
    ("grad_clip", "1.0", _llamagen_ar("--max-grad-norm")),
    ("global_batch_size", "256", "FQGAN paper, Sec. 4.1: global batch 256 on 8 A100s"),
    ("steps", imagenet_steps(300, 256), "FQGAN paper, Sec. 4.1: 300 epochs at batch 256 on ImageNet-1k"),
    ("precision", "bf16", _llamagen_ar("--mixed-precision")))


# ------------------------------------------------------------------ VCQ ("Variable Codebook Size Quantization")
_TITOK = "TiTok's open config (bytedance/1d-tokenizer; Sec. 4.1 names TiTok as the baseline tokenizer)"
VCQ_TOKENIZER = Recipe.of(
    ("optimizer", "adamw", "VCQ paper, App. A (Tokenizer training): AdamW"),
    ("beta1", "0.9", assumed(f"App. A names AdamW without betas; {_TITOK}")),
    ("beta2", "0.999", assumed(f"App. A names AdamW without betas; {_TITOK}")),
    ("lr", "1e-4", _blank("App. A's peak learning rate", _TITOK)),
    ("lr_schedule", "linear", "VCQ paper, App. A: linearly decayed"),
    ("min_lr", "1e-5", _blank("App. A's final learning rate", f"the end LR of {_TITOK}")),
    ("warmup_steps", "13000", "VCQ paper, App. A: 13k-step warmup"),
    ("lr_hold_steps", "65000", assumed("App. A: 'a 13k-step warmup and a 65k-step peak', read as 65k steps "
                                       "held at the peak before the decay")),
    ("weight_decay", "1e-4", assumed(f"not stated; {_TITOK}")),
    ("grad_clip", "1.0", assumed(f"not stated; {_TITOK}")),
    ("global_batch_size", "256", "VCQ paper, App. A: global batch 256"),
    ("steps", "1300000", "VCQ paper, App. A: 1.3M steps (260 epochs)"),
    ("precision", "bf16", "VCQ paper, App. A: bf16 mixed precision"),
    ("hflip", "true", "VCQ paper, App. A: horizontal flipping"),
    ("pixel_loss", "l1", "VCQ paper, App. A (also Sec. 3, 4.1): L1 reconstruction"),
    ("pixel_weight", "1.0", "VCQ paper, App. A: L1 weight 1.0"),
    ("perceptual_weight", "1.0", "VCQ paper, App. A: LPIPS weight 1.0"),
    ("disc_arch", "patchgan", "VCQ paper, Sec. 3 (Shared codebook): PatchGAN"),
    ("disc_loss", "hinge", assumed(f"not stated; {_HARNESS}")),
    ("disc_weight", "0.1", "VCQ paper, App. A: adversarial generator loss weight 0.1"),
    ("adaptive_disc_weight", "false", "VCQ paper, App. A: the generator loss has the fixed weight 0.1 (no "
                                      "adaptive weight is named)"),
    ("disc_start", "0", assumed("not stated; the discriminator trains from the first step")),
    notes=("random cropping (App. A): images are loaded at the preset's resolution, only the flip is applied",
           "adversarial augmentation, always on in App. A: not modelled",
           "the discriminator and commitment losses have weight 1.0 (App. A), as the harness adds them"))

VCQ_LARGE_TOKENIZER = VCQ_TOKENIZER + Recipe(notes=(
    "Large: LPIPS on a ConvNeXt-S backbone (App. A, following AliTok); the harness's LPIPS is VGG or AlexNet",))

_RAR = "RAR's open config (bytedance/1d-tokenizer), whose warm-up and batch App. A's Large-tokenizer group repeats"
VCQ_AR = Recipe.of(
    ("optimizer", "adamw", "VCQ paper, App. A (Autoregressive training): AdamW"),
    ("beta1", "0.9", _blank("App. A's beta1", _RAR)),
    ("beta2", "0.96", _blank("App. A's beta2", _RAR)),
    ("lr", "4e-4", _blank("App. A's peak learning rate", _RAR)),
    ("lr_schedule", "linear", "VCQ paper, App. A: linearly decayed"),
    ("min_lr", "1e-5", _blank("App. A's final learning rate", _RAR)),
    ("warmup_steps", "10000", "VCQ paper, App. A: 10k-step warmup (Base-tokenizer group)"),
    ("lr_hold_steps", "40000", assumed("App. A: 'a 10k-step warmup and reaches its peak at 50k steps', read as "
                                       "held at the peak until step 50k")),
    ("weight_decay", "0.03", _blank("App. A's weight decay", _RAR)),
    ("decay_norms_and_biases", "false", "VCQ paper, App. A: bias, normalization and adaptive-normalization "
                                        "parameters are excluded from weight decay"),
    ("grad_clip", "1.0", "VCQ paper, App. A: gradient clipping 1.0"),
    ("global_batch_size", "512", "VCQ paper, App. A: global batch 512 (Base-tokenizer group)"),
    ("steps", "1000000", "VCQ paper, App. A: 1.0M steps, 400 epochs (Base-tokenizer group)"),
    notes=("Large-tokenizer group (App. A): batch 2048 for 500k steps with a 62.5k-step warm-up (--set "
           "global_batch_size=2048 --set steps=500000 --set warmup_steps=62500 --set lr_hold_steps=0)",
           "ten-crop and horizontal-flip augmentation (App. A): the training split is tokenized once, "
           "unaugmented",
           "class-label, AR and token-embedding dropout 0.1 (App. A) are the preset's model settings"))
