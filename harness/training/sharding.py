"""Fully sharded data parallel (PyTorch FSDP2, ``fully_shard``) for the training loops: ``parallel=fsdp``.

Under DDP every process holds the whole model, its gradients and AdamW's two moments (16 bytes per
parameter in fp32); FSDP splits each of them over the processes and gathers one block's weights at a
time for its forward and backward. What is sharded:

- each *shard unit* on its own: the composite modules (modules with submodules of their own) that sit
  directly in an ``nn.ModuleList`` or ``nn.Sequential``, outermost first. That is every transformer
  block (the repo's Llama blocks, a Hugging Face LM's decoder layers under CAR) and every
  ResNet/attention block of a conv tokenizer; weights outside any unit (embeddings, heads, a decoder's
  last conv) form the root unit, gathered for the whole step. The adaptive GAN weight differentiates
  the decoder's last layer: it lives in the root unit, whose weights stay gathered from the forward to
  the backward, so that gradient is taken as under DDP (in bf16 under the bf16 policy: the weight is
  a ratio of two norms, good to bf16's precision). Each of its ``autograd.grad`` calls ends FSDP's
  backward bookkeeping once more (the root is gathered again for the real backward): a cost, not an
  error. A tokenizer's discriminator is not sharded: it stays under DDP (``train_tokenizer.replicated``).
- mixed precision on CUDA with ``precision=bf16``: weights are gathered and used in bf16, gradients
  reduced in fp32 (``MixedPrecisionPolicy``); the sharded master weights and AdamW stay fp32. On the
  CPU, bf16 remains autocast as under DDP.
- ``activation_checkpointing=true`` recomputes each unit's forward during the backward instead of
  keeping its activations (``torch.utils.checkpoint``, non-reentrant), for either mode.

Rank 0 builds a generator as DDP would (the seeded init, or a pretrained backbone read from its
folder); the other processes build it on the meta device, without weights (a tokenizer is built on
every process). Every process shards it and
receives its shard of rank 0's weights (``runtime.place``), so FSDP starts from DDP's weights exactly
and only rank 0 ever holds the whole model, in host memory. Buffers are not sharded; as under DDP
(``broadcast_buffers``), rank 0's are copied to every process before each forward, so running
statistics (a discriminator's BatchNorm) and checkpoints are the ones DDP would have.
"""
from __future__ import annotations

import functools
import warnings
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one (see the module docstring), in order of registration."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if (isinstance(module, (nn.ModuleList, nn.Sequential)) and any(True for _ in child.children())
                    and not isinstance(child, (nn.ModuleList, nn.ModuleDict))):   # containers have no forward
                units.append(child)          # a composite block in a list: a unit; its insides are not
            else:
                visit(child)
    visit(model)
    return units


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute each shard unit's forward in the backward (activation checkpointing); returns how many
    units now do. The state-dict keys do not change (the unit's ``forward`` is wrapped, not the module)."""
    units = shard_units(model)
    for unit in units:
        unit.forward = functools.partial(_recomputed, unit.forward)
    return len(units)


def _recomputed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():          # sampling and evaluation: nothing to save memory on
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def fully_shard_model(model: nn.Module, bf16_params: bool, mesh=None) -> nn.Module:
    """Shard ``model`` in place over the default process group (or ``mesh``): each shard unit, then the
    root. ``bf16_params``: gather weights in bf16 and reduce gradients in fp32 (what ``place`` asks for
    with ``precision=bf16`` on CUDA); BatchNorm layers keep fp32 weights and get fp32 inputs, as FSDP1's
    mixed precision left them (their running statistics are fp32 buffers, and batch_norm refuses to
    mix). Works on the meta device too (nothing is allocated: that is how ``vqbench params --memory``
    checks a paper preset's per-GPU share)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    # FSDP warns when a module returns a view (an in-place op on it would skip the gather); no loop of
    # vqbench modifies a model's outputs in place, and tests/test_fsdp.py shows FSDP's steps equal DDP's
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    if bf16_params:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        full = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
        for norm in [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]:
            fully_shard(norm, mesh=mesh, mp_policy=full)
    else:
        policy = MixedPrecisionPolicy()
    for unit in shard_units(model):
        if any(True for _ in unit.parameters()):      # a unit without weights has nothing to shard
            fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    if any(True for _ in model.buffers()):
        model.register_forward_pre_hook(lambda module, _inputs: broadcast_buffers(module))
    return model


@torch.no_grad()
def broadcast_buffers(module: nn.Module) -> None:
    """DDP's ``broadcast_buffers``: every process continues from rank 0's buffers (before each forward,
    and before a checkpoint, whose writer of a replicated tensor may be any process)."""
    import torch.distributed as dist
    if dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def local_tensors(tensors: Iterator[torch.Tensor]) -> list[torch.Tensor]:
    """This process's part of each tensor: the local shard of a DTensor, a plain tensor itself."""
    return [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
