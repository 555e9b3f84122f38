"""How a training step runs on one process or many: mixed precision, DDP wrapping, and the guard
that stops every rank together before a NaN or infinity can reach a checkpoint."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.core.arguments import POSITIVE_INT
from harness.core.distributed import Dist, all_true, in_process_group
from harness.core.errors import VQBenchError
from harness.training.sharding import broadcast_buffers, checkpoint_activations, fully_shard_model, local_tensors

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, d: Dist) -> None:
    if AMP_DTYPES[precision] is torch.float16 and d.device.type != "cuda":
        raise VQBenchError("--set precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")


def check_n_train(n_train: int | None) -> None:
    """``--n-train``: a positive number of images (None: all of them)."""
    if n_train is not None and not POSITIVE_INT[0](n_train):
        raise VQBenchError(f"--n-train {n_train}: the number of training images must be a positive integer")


def check_start(start: int, steps: int, checkpoint: Path | None) -> None:
    """A checkpoint past the run's last step cannot have been written by it (its state.json was
    edited, or the folder copied from a longer run whose configuration hashes alike)."""
    if start > steps:
        raise VQBenchError(f"checkpoint {checkpoint} is at step {start}, beyond --set steps={steps} of "
                           "this run; restore the checkpoint the run wrote, or train a new run with more steps")


def autocast(precision: str, d: Dist) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context: bf16/fp16 when asked, a no-op for fp32."""
    dtype = AMP_DTYPES[precision]
    return torch.autocast(d.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (bf16 and fp32 need none: the scaler is then a pass-through)."""
    return torch.amp.GradScaler(enabled=AMP_DTYPES[precision] is torch.float16)


def build_device(d: Dist, tc) -> str | None:
    """Where this process builds its generator: under ``parallel=fsdp`` with several processes only
    rank 0 builds real weights (the seeded init, or a pretrained backbone), the others build on the
    meta device (nothing allocated) and receive their shards from rank 0 in ``place``; else where the
    catalogue builds (None: the CPU). Tokenizers are built for real on every rank: they are small, and
    some hold state outside their weights (an FQ tokenizer's frozen teacher)."""
    return "meta" if tc.parallel == "fsdp" and d.enabled and not d.is_main else None


def follow_rank0_rng(d: Dist) -> None:
    """Give every process rank 0's CPU random state (a meta-device build draws no random numbers, so
    after it the processes' streams would differ; under DDP they never do)."""
    if d.enabled:
        state = torch.get_rng_state().to(d.device)
        torch_dist.broadcast(state, src=0)
        torch.set_rng_state(state.cpu())


def place(module: torch.nn.Module | None, d: Dist, tc) -> None:
    """Put ``module`` on ``d``'s device, ready for its optimizer: activation checkpointing when asked;
    under ``parallel=fsdp`` in a process group (torchrun), sharded (``sharding.fully_shard_model``)
    with each process's shard of rank 0's weights and rank 0's buffers. One process without torchrun
    has nothing to shard (it still writes sharded checkpoints)."""
    if module is None:
        return
    if tc.activation_checkpointing:
        checkpoint_activations(module)
    if not (tc.parallel == "fsdp" and in_process_group()):
        module.to(d.device)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    on_meta = any(t.is_meta for t in (*module.parameters(), *module.buffers()))
    full = module.state_dict() if d.is_main else {}
    fully_shard_model(module, bf16_params=tc.precision == "bf16" and d.device.type == "cuda")
    if on_meta:
        module.to_empty(device=d.device)
    else:
        module.to(d.device)
    set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    broadcast_buffers(module)          # non-persistent ones too (rotary tables, frozen codebooks)


def wrap_ddp(module: torch.nn.Module | None, d: Dist, tc, find_unused_parameters: bool = False):
    """``module`` under DDP (gradients averaged over processes) when several run with ``parallel=ddp``,
    else itself (one process, or FSDP, whose sharded module averages its own gradients)."""
    if module is None or not d.enabled or tc.parallel != "ddp":
        return module
    return DDP(module, find_unused_parameters=find_unused_parameters)


def _maybe_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One bool per tensor, false if it holds a NaN or an infinity: whether its 2-norm is finite. Exact
    for NaN and infinities (they make the norm NaN or inf); a finite tensor whose norm overflows (values
    beyond ~1e19 in fp32) is flagged too, and ``FiniteGuard.check`` clears such false alarms with an
    exact look. ``_foreach_norm`` is one fused kernel on CUDA and the cheapest exact-enough reduction
    on CPU (the max-abs norm, which cannot overflow, is ~6x slower there)."""
    return torch.isfinite(torch.stack(torch._foreach_norm(tensors, 2)))


def _floating(named) -> list[tuple[str, torch.Tensor]]:
    return [(n, t.detach()) for n, t in named
            if t is not None and torch.is_tensor(t) and t.is_floating_point() and t.numel() > 0]


def _checked(t) -> bool:
    return t is not None and t.is_floating_point() and t.numel() > 0


class FiniteGuard:
    """Stops training, on every rank together, before a non-finite value can be checkpointed.

    During a step the loop records what it computed: each loss (``loss``), each optimizer's gradients
    after unscaling and before clipping (``gradients``) and its module's weights and buffers after the
    step (``weights``); before a checkpoint, everything it will write (``state``: EMA and optimizer
    moments too). ``check`` reduces all of it to one flag, with one host sync on a good step (and
    one all-reduce when several processes run), and raises a VQBenchError naming the step, the first culprit in
    the order recorded (a loss and its terms, else the first parameter with a non-finite gradient,
    else the first non-finite weight) and the last checkpoint written. That checkpoint passed the
    same check when it was written, so it is finite and is the one to resume from or inspect.

    fp16 (GradScaler): infinite gradients are the scaler's business (it skips the step and lowers
    the scale), so gradients are not checked; the weights after the step still are. fp32 and bf16:
    any non-finite gradient stops the run. Steps are reported 0-based (step 3 is the fourth step,
    the one checkpoint ``step_00000004`` would have held)."""

    def __init__(self, d: Dist, precision: str = "fp32"):
        self.d = d
        self.check_gradients = AMP_DTYPES[precision] is not torch.float16
        self._items: list[tuple[torch.Tensor, list | None, Callable[[int], tuple[str, str]]]] = []
        self._submodules: dict[int, tuple[torch.nn.Module, list]] = {}

    def _submodules_of(self, module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """(name prefix, submodule) of every submodule, walked once: a step then reads each one's
        current parameters and buffers directly (``named_parameters`` re-walks the tree every call)."""
        held = self._submodules.get(id(module))
        if held is None or held[0] is not module:
            held = self._submodules[id(module)] = (module, [(f"{p}." if p else "", m)
                                                           for p, m in module.named_modules()])
        return held[1]

    def _record(self, flags: torch.Tensor, tensors: list[torch.Tensor] | None,
                describe: Callable[[int], tuple[str, str]]) -> None:
        """``flags``: one per tensor of ``tensors`` (false: maybe not finite; None: the flags are exact);
        ``describe(i)``: (what, detail) of the i-th, for the message ``<what> at step S<detail>``."""
        self._items.append((flags.to(self.d.device, non_blocking=True), tensors, describe))

    def _record_tensors(self, named: list[tuple[str, torch.Tensor]], describe: Callable[[str], tuple[str, str]]):
        if named:                    # under FSDP each process checks its own shards
            tensors = local_tensors(t for _, t in named)
            self._record(_maybe_finite(tensors), tensors, lambda i: describe(named[i][0]))

    def loss(self, what: str, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """A loss about to be backpropagated; ``terms`` are its named parts (shown when it is not finite)."""
        terms = dict(terms)

        def describe(_: int) -> tuple[str, str]:
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            return f"non-finite {what}", f" ({values})"
        self._record(torch.isfinite(total.detach()).reshape(1), None, describe)

    @torch.no_grad()
    def gradients(self, name: str, module: torch.nn.Module) -> None:
        """``module``'s gradients (unscaled, not yet clipped); ``name`` prefixes its parameter names."""
        if self.check_gradients:
            named = [(pre + k, p.grad) for pre, m in self._submodules_of(module)
                     for k, p in m._parameters.items() if p is not None and _checked(p.grad)]
            self._record_tensors(named, lambda n: (f"non-finite gradient of {name}.{n}", ""))

    @torch.no_grad()
    def weights(self, name: str, module: torch.nn.Module) -> None:
        """``module``'s parameters and floating-point buffers after its optimizer step."""
        named = [(pre + k, t) for pre, m in self._submodules_of(module)
                 for k, t in (*m._parameters.items(), *m._buffers.items()) if _checked(t)]
        self._record_tensors(named, lambda n: (f"non-finite weight {name}.{n}", " after the optimizer step"))

    @torch.no_grad()
    def state(self, held) -> None:
        """Everything a checkpoint of ``held`` (a ``TrainingState``) writes: module weights and buffers,
        the EMA and the optimizer moments (run once per checkpoint, not per step)."""
        names: dict[int, str] = {}
        named: list[tuple[str, torch.Tensor]] = []
        for mname, module in held.modules.items():
            if module is not None:
                names |= {id(p): f"{mname}.{n}" for n, p in module.named_parameters()}
                named += [(f"weight {mname}.{k}", v) for k, v in _floating(module.state_dict().items())]
        if held.ema is not None:
            named += [(f"EMA weight ema.{k}", v) for k, v in _floating(held.ema.shadow.items())]
        for oname, opt in held.optimizers.items():
            if opt is not None:
                for group in opt.param_groups:
                    for p in group["params"]:
                        named += [(f"optimizer state {oname}: {k} of {names.get(id(p), 'a parameter')}", v)
                                  for k, v in _floating(opt.state.get(p, {}).items())]
        by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
        for n, t in named:                 # optimizer step counters may live on the CPU
            by_device.setdefault(t.device, []).append((n, t))
        for group in by_device.values():
            self._record_tensors(group, lambda n: (f"non-finite {n}", " (before writing its checkpoint)"))

    @torch.no_grad()
    def check(self, step: int, last_checkpoint: Path | None) -> None:
        """Raise on every rank if anything recorded since the last check is NaN or infinite on any rank."""
        items, self._items = self._items, []
        if not items:
            return
        maybe_bad = (~torch.cat([flags for flags, _, _ in items]).all()).float().reshape(1)
        if self.d.enabled:
            torch_dist.all_reduce(maybe_bad, op=torch_dist.ReduceOp.MAX)
        if not maybe_bad.item():                # the one host sync of a good step
            return
        # a flag is down somewhere: look exactly (a finite tensor whose 2-norm overflowed is no culprit;
        # clipping has since scaled the gradients, which keeps finite values finite and the rest not)
        culprit = None
        for flags, tensors, describe in items:
            for i in (~flags).nonzero().flatten().tolist():
                if tensors is None or not bool(torch.isfinite(tensors[i]).all()):
                    culprit = describe(i)
                    break
            if culprit:
                break
        if all_true(culprit is None, self.d):  # every rank: only finite values after all
            return
        what, detail = culprit or ("non-finite values on another process", "")
        where = (f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint
                 else "; no checkpoint was written yet")
        raise VQBenchError(f"{what} at step {step}{detail}{where}")
