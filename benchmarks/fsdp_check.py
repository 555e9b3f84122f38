"""parallel=fsdp on a GPU (issue #18), one command, results in one folder.

    python benchmarks/fsdp_check.py --device cuda --out $OUT          # on the GPU machine (~3 min on an H200)
    python benchmarks/fsdp_check.py --quick --device cpu --out /tmp/x  # the logic, on the CPU (a test runs it)

Two sections, each guarded (an exception is recorded and the other section still runs):

- ``steps``: one process, one GPU, a paper-scale generator (``ar-l`` on its paper layout: T = 256,
  K = 16384, batch 64; quick: ``ar-tiny``) trained as ``train_generator.py`` steps it (bf16 on CUDA),
  three ways from the same seed: ``ddp`` (the module as DDP holds it per GPU: fp32 weights, bf16
  autocast), ``fsdp`` (``runtime.place`` with ``parallel=fsdp`` in a one-rank process group: the
  MixedPrecisionPolicy path, bf16 gathers and fp32 reduction) and ``fsdp+ac`` (activation
  checkpointing as well). Per way: steps/s, peak memory (``max_memory_allocated``), the first and last
  losses (the first step's loss of ``fsdp`` against ``ddp``: same weights, same batch, bf16 compute both
  ways) and whether every loss was finite. With one GPU there is nothing to split: the row shows what
  the FSDP machinery costs and what activation checkpointing saves, not the 1/N of N GPUs
  (``vqbench params --memory`` plans that).
- ``cli``: ``torchrun --nproc_per_node 1 -m harness.cli`` trains ``vq-tiny`` and ``ar-tiny`` on the
  ``procedural`` dataset with ``--set parallel=fsdp --set precision=bf16`` on the device (NCCL),
  evaluates the tokenizer's sharded checkpoint (PSNR, SSIM, codebook usage), samples from the
  generator's and consolidates it: return codes, seconds, the last stderr lines on failure. LPIPS is
  off (``perceptual_weight=0``): its backbone weights come from a package the GPU image lacks, and the
  check is about sharding, not the perceptual loss.

Writes ``fsdp_check.json`` and ``fsdp_check.md`` (dated, with the machine) to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GIB = 1024 ** 3


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_rank_group(device: str):
    """A process group of this one process (what ``torchrun --nproc_per_node 1`` gives the trainer)."""
    import torch.distributed as dist
    if not dist.is_initialized():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
        dist.init_process_group("nccl" if device == "cuda" else "gloo")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_rows(a) -> list[dict]:
    from harness.core.distributed import Dist
    from harness.core.registry import GENERATORS
    from harness.models.catalog import build_tokenizer, generator_config
    from harness.core.contracts import Conditioning
    from harness.training.optim import adamw, optimizer_step
    from harness.training.runtime import autocast, place
    from harness.training.train_generator import GeneratorTrainConfig
    preset = "ar-tiny" if a.quick else "ar-l"
    if a.quick:
        layout, conditioning = build_tokenizer("vq-tiny", device="meta")[1].layout, Conditioning("class", num_classes=10)
    else:
        meta = GENERATORS.entry(preset).meta
        layout, conditioning = meta.paper_layout, meta.paper_conditioning
    batch = 8 if a.quick else a.batch
    precision = "bf16" if a.device == "cuda" else "fp32"
    d = Dist(device=torch.device(a.device))
    g = torch.Generator().manual_seed(0)
    idx = (torch.rand(batch, layout.num_positions, generator=g) * layout.max_codebook_size).long().to(a.device)
    y = torch.randint(0, conditioning.num_classes, (batch,), generator=g).to(a.device)
    one_rank_group(a.device)
    rows = []
    for way in ("ddp", "fsdp", "fsdp+ac"):
        row = {"preset": preset, "way": way, "batch": batch, "tokens_per_image": layout.num_positions,
               "codebook": layout.max_codebook_size, "precision": precision}
        try:
            if a.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            tc = GeneratorTrainConfig(batch_size=batch, precision=precision,
                                      parallel="ddp" if way == "ddp" else "fsdp",
                                      activation_checkpointing=way == "fsdp+ac")
            torch.manual_seed(0)
            model = generator_config(preset).build(layout, conditioning, None)
            row["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
            place(model, d, tc)
            model.train()
            opt = adamw(model.parameters(), tc)
            losses = []

            def step():
                torch.manual_seed(1)          # the same condition-dropout draw every way
                with autocast(precision, d):
                    loss = model(idx, y)
                optimizer_step(loss, opt, model, tc.grad_clip)
                losses.append(loss.detach().float())

            t0 = time.perf_counter()
            for _ in range(a.warmup):
                step()
            _sync(a.device)
            row["warmup_s"] = round(time.perf_counter() - t0, 2)
            if a.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            _sync(a.device)
            seconds = time.perf_counter() - t0
            values = torch.stack(losses).cpu()
            row.update(status="ok", steps_per_s=a.steps / seconds, images_per_s=a.steps * batch / seconds,
                       peak_mem_gib=torch.cuda.max_memory_allocated() / GIB if a.device == "cuda" else None,
                       first_loss=float(values[0]), last_loss=float(values[-1]),
                       losses_finite=bool(torch.isfinite(values).all()))
            del model, opt
        except Exception as e:                                       # noqa: BLE001 (recorded)
            traceback.print_exc()
            row.update(status="error", error=_error(e))
        rows.append(row)
        print(f"[steps] {way}: {row.get('steps_per_s', 0):.2f} steps/s, peak {row.get('peak_mem_gib') or 0:.1f} GiB, "
              f"first loss {row.get('first_loss')}, {row.get('error', '')}", flush=True)
    base = next((r for r in rows if r["way"] == "ddp" and r["status"] == "ok"), None)
    for r in rows:
        if base and r["status"] == "ok":
            r["first_loss_vs_ddp"] = r["first_loss"] - base["first_loss"]
    return rows


def cli_rows(a) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="4")
    tmp = Path(tempfile.mkdtemp(prefix="fsdp_check_"))
    steps = "4" if a.quick else "40"
    common = ["--n-train", "256", "--set", f"steps={steps}", "--set", "batch_size=32", "--set", "parallel=fsdp",
              "--set", f"precision={'bf16' if a.device == 'cuda' else 'fp32'}", "--device", a.device, "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                "-m", "harness.cli"]
    plain = [sys.executable, "-m", "harness.cli"]
    commands = [
        ("train vq-tiny (fsdp)", torchrun + ["train", "vq-tiny", "--run-dir", tmp / "vq", "--dataset", "procedural",
                                             "--set", "perceptual_weight=0", *common]),
        ("train ar-tiny (fsdp)", torchrun + ["train", "ar-tiny", "--tokenizer", tmp / "vq", "--run-dir", tmp / "ar",
                                             *common]),
        ("eval vq-tiny", plain + ["eval", tmp / "vq", "--n-eval", "64", "--results", tmp / "rows.jsonl",
                                  "--device", a.device, "--quiet"]),
        ("sample ar-tiny", plain + ["sample", tmp / "ar", "--n", "32", "--out", tmp / "samples.npz",
                                    "--device", a.device, "--quiet"]),
        ("consolidate ar-tiny", plain + ["consolidate", tmp / "ar", "--out", tmp / "released"]),
    ]
    rows = []
    for name, cmd in commands:
        t0 = time.perf_counter()
        r = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=a.cli_timeout_s)
        row = {"command": name, "returncode": r.returncode, "seconds": round(time.perf_counter() - t0, 1)}
        if r.returncode != 0:             # torchrun ends with its own banner: keep the error, log it all
            lines = r.stderr.strip().splitlines()
            row["stderr_tail"] = [line for line in lines if "Error" in line or line.startswith("error:")][-4:] \
                or lines[-6:]
            with open(a.out / "fsdp_cli_stderr.log", "a") as log:
                log.write(f"===== {name}: {' '.join(map(str, cmd))}\n{r.stderr}\n")
        rows.append(row)
        print(f"[cli] {name}: rc={r.returncode} in {row['seconds']} s", flush=True)
    state = tmp / "ar" / "checkpoints"
    latest = state / (state / "latest").read_text().strip() if (state / "latest").exists() else None
    if latest is not None:
        info = json.loads((latest / "state.json").read_text())
        rows.append({"command": "ar-tiny checkpoint", "returncode": 0, "format": info.get("format"),
                     "world_size": info.get("world_size"), "seconds": 0})
    if (tmp / "rows.jsonl").exists():
        metrics = {json.loads(line)["metric"]: json.loads(line)["value"] for line in open(tmp / "rows.jsonl")}
        rows.append({"command": "metrics", "returncode": 0, "seconds": 0,
                     "values": {k: metrics[k] for k in ("psnr", "ssim", "codebook_usage") if k in metrics}})
    if (tmp / "samples.npz").exists():
        import numpy as np
        with np.load(tmp / "samples.npz") as npz:
            rows.append({"command": "samples", "returncode": 0, "seconds": 0, "values": {"shape": list(npz["arr_0"].shape)}})
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# parallel=fsdp on {m['device_name']} ({result['date']})", "",
             f"torch {m['torch']}, CUDA {m['cuda']}; `{' '.join(result['argv'])}`", "",
             "## one process, one GPU: DDP's per-GPU module vs FSDP vs FSDP + activation checkpointing", "",
             "| preset | way | batch | params (M) | steps/s | images/s | peak GiB | first loss | vs ddp | finite | error |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in result["sections"].get("steps", {}).get("rows", []):
        def f(k, spec=".2f"):
            v = r.get(k)
            return "" if v is None else format(v, spec)
        lines.append(f"| {r['preset']} | {r['way']} | {r['batch']} | {f('params_M', '.1f')} | {f('steps_per_s')} | "
                     f"{f('images_per_s', '.1f')} | {f('peak_mem_gib', '.1f')} | {f('first_loss', '.4f')} | "
                     f"{f('first_loss_vs_ddp', '.2e')} | {r.get('losses_finite', '')} | {r.get('error', '')} |")
    lines += ["", "## torchrun --nproc_per_node 1: train, evaluate, consolidate (sharded checkpoints)", "",
              "| command | rc | seconds | detail |", "|---|---:|---:|---|"]
    for r in result["sections"].get("cli", {}).get("rows", []):
        detail = r.get("values") or ({"format": r["format"], "world_size": r["world_size"]} if "format" in r
                                     else " / ".join(r.get("stderr_tail", [])))
        lines.append(f"| {r['command']} | {r['returncode']} | {r['seconds']} | {detail} |")
    for name, sec in result["sections"].items():
        if sec.get("status") == "error":
            lines.append(f"\n{name}: {sec['error']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks" / "results"))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny presets and few steps (the CPU test)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cli-timeout-s", type=float, default=240.0)
    p.add_argument("--only", default="steps,cli")
    a = p.parse_args(argv)
    if a.quick:
        a.warmup, a.steps = 1, 2
    from harness.models.catalog import load_all
    load_all()
    result = {"argv": ["fsdp_check.py", *(sys.argv[1:] if argv is None else list(argv))],
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"device_name": torch.cuda.get_device_name() if a.device == "cuda" else "CPU",
                          "torch": torch.__version__, "cuda": torch.version.cuda}, "sections": {}}
    a.out.mkdir(parents=True, exist_ok=True)
    for name, run in (("steps", step_rows), ("cli", cli_rows)):
        if name not in a.only.split(","):
            continue
        t0 = time.perf_counter()
        try:
            rows = run(a)
            bad = [r for r in rows if r.get("status") == "error" or r.get("returncode", 0) != 0]
            result["sections"][name] = {"status": "ok" if not bad else "partial", "rows": rows}
        except Exception as e:                                       # noqa: BLE001 (recorded)
            traceback.print_exc()
            result["sections"][name] = {"status": "error", "error": _error(e)}
        result["sections"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        (a.out / "fsdp_check.json").write_text(json.dumps(result, indent=1))
    (a.out / "fsdp_check.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
