"""What FSDP shards, activation checkpointing, and the memory plan (one process; the torchrun tests
of parallel=fsdp are in test_fsdp.py)."""
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import REPO
from harness.core.contracts import Conditioning, TokenLayout
from harness.core.registry import GENERATORS
from harness.models.catalog import build_generator, build_tokenizer
from harness.models.nn import AttnBlock, ResnetBlock, Upsample
from harness.models.transformer import Block
from harness.training.memory import STATE_BYTES, plan
from harness.training.sharding import checkpoint_activations, shard_units


def test_shard_units_are_the_blocks_of_every_family():
    _, tok = build_tokenizer("vq-tiny")
    units = shard_units(tok)
    assert {type(u) for u in units} == {ResnetBlock, Upsample}
    assert len(units) == sum(isinstance(m, (ResnetBlock, AttnBlock, Upsample)) for m in tok.modules())
    assert tok.decoder.conv_out not in units        # the adaptive GAN weight's layer stays in the root unit
    _, gen = build_generator("ar-tiny", {}, tok, Conditioning("class", num_classes=10))
    blocks = shard_units(gen)
    assert blocks and all(isinstance(b, Block) for b in blocks)
    assert len(blocks) == sum(isinstance(m, Block) for m in gen.modules())


def test_shard_units_of_car_are_the_pretrained_lm_decoder_layers(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=50, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    model = replace(GENERATORS.get("car-tiny")(), backbone=f"hf:{tmp_path / 'lm'}").build(
        TokenLayout.constant(5, 16, position_kind="channel"), Conditioning("class", num_classes=3),
        codebook=torch.randn(16, 8))
    assert shard_units(model) == list(model.backbone.decoder.layers)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(*batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_keeps_loss_gradients_and_keys():
    _, tok = build_tokenizer("vq-tiny")
    torch.manual_seed(0)
    _, gen = build_generator("ar-tiny", {}, tok, Conditioning("class", num_classes=10))
    gen.train()
    batch = (torch.randint(0, tok.layout.max_codebook_size, (4, tok.layout.num_positions)), torch.arange(4))
    keys = list(gen.state_dict())
    torch.manual_seed(1)
    plain = _loss_and_grads(gen, batch)
    assert checkpoint_activations(gen) == len(shard_units(gen)) > 0
    torch.manual_seed(1)                  # the same condition-dropout draw
    recomputed = _loss_and_grads(gen, batch)
    assert list(gen.state_dict()) == keys
    assert torch.allclose(plain[0], recomputed[0], rtol=1e-6)
    assert plain[1].keys() == recomputed[1].keys()
    for name, grad in plain[1].items():
        assert torch.allclose(grad, recomputed[1][name], rtol=1e-5, atol=1e-7), name


def test_memory_plan_counts_fully_shard_layout_exactly():
    with torch.device("meta"):
        model = nn.Sequential(nn.Embedding(10, 6), nn.ModuleList([nn.Sequential(nn.Linear(6, 6), nn.ReLU())
                                                                  for _ in range(3)]), nn.Linear(6, 5))
    total = sum(p.numel() for p in model.parameters())
    one = plan(model, 1)
    assert one.fsdp_share == total and one.ddp_gb == pytest.approx(total * STATE_BYTES / 1e9)
    four = plan(model, 4)
    # fully_shard splits every parameter in 4 row blocks of ceil(rows / 4): rank 0 holds the largest
    rows = {(10, 6): 3, (6, 6): 2, (6,): 2, (5, 6): 2, (5,): 2}
    expected = sum(rows[tuple(p.shape)] * (p.shape[1] if p.dim() == 2 else 1) for p in model.parameters())
    assert four.fsdp_share == expected
    assert four.largest_unit == 6 * 6 + 6 and four.gathered_parameters == (total - 3 * 42) + 2 * 42
    assert all(p.is_meta for p in model.parameters())       # the plan shards a copy


def test_paper_car_preset_shards_on_the_meta_device_without_allocating():
    """`vqbench params car-qwen3-4b --memory --gpus 8`: the 4.08B-parameter preset is built on the meta
    device and sharded by the training loop's fully_shard_model; the process never holds its weights
    (16 GB in fp32), and the measured FSDP share is an eighth of the DDP state."""
    code = ("import resource, sys; from harness.cli import main; rc = main(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code, "params", "car-qwen3-4b", "--memory", "--gpus", "1,8"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| car-qwen3-4b")]
    assert [int(row[2]) for row in rows] == [1, 8]
    ddp = [float(row[3]) for row in rows]
    fsdp_state = [float(row[4].split("(")[1].split("+")[0]) for row in rows]
    assert ddp[0] == ddp[1] == pytest.approx(4.079e9 * 16 / 1e9, rel=1e-3)
    assert fsdp_state[0] == pytest.approx(ddp[0], rel=1e-3)
    assert fsdp_state[1] == pytest.approx(ddp[0] / 8, rel=0.01)
    maxrss_gb = int(next(line for line in lines if line.startswith("maxrss_kb")).split()[1]) / 1e6
    assert maxrss_gb < 3, f"the planning process peaked at {maxrss_gb:.1f} GB: weights were allocated"


BF16_TOKENIZER_STEP = """
import os, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"], RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")
from harness.models.catalog import build_tokenizer, load_all
from harness.training.losses import VQLoss
from harness.training.optim import adamw, optimizer_step
from harness.training.sharding import fully_shard_model
from harness.training.train_tokenizer import TrainConfig
load_all()
torch.manual_seed(0)
# a BatchNorm under the bf16 policy keeps fp32 weights and gets fp32 inputs
net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)), torch.nn.Conv2d(4, 2, 1))
fully_shard_model(net, bf16_params=True)
seen = {}
net[0][1].register_forward_hook(lambda m, i, o: seen.update(weight=m.weight.dtype, input=i[0].dtype))
with torch.autocast("cpu", dtype=torch.bfloat16):
    net(torch.rand(2, 1, 8, 8)).float().mean().backward()
assert seen == {"weight": torch.float32, "input": torch.float32}, seen
assert net[0][0].weight.grad.dtype == torch.float32          # gradients of the fp32 shards
# the tokenizer as the loop runs it: sharded with the policy, its discriminator replicated
_, model = build_tokenizer("vq-tiny")
tc = TrainConfig(perceptual_weight=0, parallel="fsdp", precision="bf16")
loss_fn = VQLoss(tc, model.in_channels, model.resolution)
disc = loss_fn.discriminator
fully_shard_model(model, bf16_params=True)
x = torch.rand(4, model.in_channels, model.resolution, model.resolution) * 2 - 1
opt_g, opt_d = adamw(model.parameters(), tc), adamw(disc.parameters(), tc)
for step in range(2):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        total, logs = loss_fn.generator_loss(x, out, model, step)
    optimizer_step(total, opt_g, model, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_total, _ = loss_fn.discriminator_loss(disc, x, out.reconstruction.detach())
    optimizer_step(d_total, opt_d, disc, 1.0)
    assert torch.isfinite(total) and torch.isfinite(d_total) and "gan_g" in logs
print("ok")
"""


def test_bf16_gathered_weights_keep_batchnorm_fp32_and_train_a_tokenizer():
    """The policy ``place`` gives FSDP on CUDA with precision=bf16 (bf16 gathers, fp32 reduction), run on
    the CPU: a BatchNorm keeps fp32 weights and inputs (a bf16 weight beside its fp32 running statistics
    is refused by batch_norm: the first GPU run of parallel=fsdp failed there), and a tokenizer sharded
    so trains two steps, with its GAN, beside its replicated discriminator."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO), PORT=str(port), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", BF16_TOKENIZER_STEP], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
