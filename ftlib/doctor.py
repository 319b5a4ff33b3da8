"""Machine check: what this machine will do with the course, in seconds, before any long run.

``python -m ftlib.doctor`` (``--json`` for scripts) prints the device, the training and generation dtypes, native
bf16 or not, cores, RAM and free disk against what notebook 05 needs, an *estimate* of 05's run time, and the
advice that follows. A learner on a Mac or an 8 GB laptop should learn what their machine will do from this, not
from a run that fails after ten minutes.

The time estimate times a few matmuls of Gemma-3-270M's shapes in the training dtype for about a second and
scales by the FLOPs of one training step of 05's offline config. Its constants are calibrated on the reference
run (48 steps in 215 s, 2 cores with native bf16; fp32 training about 2.2x as long, docs/benchmarks.md), so it is
an estimate: other workloads, thermal limits and memory bandwidth move real runs by tens of percent.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ftlib import device as dev

# What notebook 05 needs (offline profile), measured in its committed run (docs/benchmarks.md). GB here are GiB
# (2**30 bytes), as ru_maxrss / 2**20 in 05's last cell and as below.
PEAK_RAM_GB = 5.2
ASSETS_GB = 2.2   # the offline asset cache, all of it (models + data): 2.36e9 bytes
MODEL_GB = 1.1    # the merged model 05 saves for 06, 08 and 09
LOW_RAM_GB = 8.0  # below this total, change 05's config (see advice)
# Gemma-3-270M: hidden 640, MLP 2048, 18 layers, 4 query heads and 1 KV head of 256, vocabulary 262,144.
HIDDEN, MLP, LAYERS, Q_DIM, KV_DIM, VOCAB = 640, 2048, 18, 1024, 256, 262_144
TOKENS_PER_STEP = 4 * 256  # 05: batch_size 4, max_length 256
STEPS = 48
# Calibration (see module docstring): training seconds = CAL * steps * step_flops / measured matmul FLOP/s.
# CAL absorbs what matmuls alone miss (attention, norms, optimizer, Python); set so this check run on the
# reference machine (2 cores, avx512_bf16) predicts its 217 s in bf16 and 2.2 x 217 s in fp32. Measured there:
# bf16 380 GFLOP/s (matmuls alone: 3.47 min of the 3.62), fp32 176 GFLOP/s (7.47 min of 7.96).
# The reference run: notebook 05's committed run (docs/benchmarks.md); CAL scales with its training time.
REF_TRAIN_S, REF_NOTEBOOK_MIN = 215, 6.1  # 2026-12-07 (was 217 s, 5.6 min with session 5's recipe)
CAL = {"bfloat16": 1.04 * REF_TRAIN_S / 217, "float32": 1.07 * REF_TRAIN_S / 217}
NOTEBOOK_PER_TRAINING = REF_NOTEBOOK_MIN * 60 / REF_TRAIN_S  # the whole notebook around its training


@dataclass
class Facts:
    device: str
    device_name: str
    train_dtype: str
    generation_dtype: str
    native_bf16: bool
    cores: int
    threads: int
    ram_total_gb: float
    ram_available_gb: float
    disk_free_gb: float
    disk_needed_gb: float
    matmul_gflops: float
    training_minutes: float
    notebook_minutes: float


def pick() -> torch.device:
    """The device the course would use: CUDA, else Apple's MPS (fp32 there), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def memory_gb(meminfo: str = "/proc/meminfo") -> tuple[float, float]:
    """(total, available) RAM in GB: /proc/meminfo on Linux, else os.sysconf (total for both)."""
    try:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in Path(meminfo).read_text().splitlines()
                  if line.strip()}
        total = fields["MemTotal"] / 2**20
        return total, fields.get("MemAvailable", fields["MemTotal"]) / 2**20
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0, 0.0
    return total, total


def disk_gb(home: Path, workdir: Path) -> tuple[float, float]:
    """(free where the saved model goes, what is still needed): the model, plus the asset cache if not fetched."""
    cached = sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) / 2**30 if home.is_dir() else 0.0
    needed = MODEL_GB + max(0.0, ASSETS_GB - cached)
    probe = workdir if workdir.exists() else Path.home()
    return shutil.disk_usage(probe).free / 2**30, needed


def step_flops() -> float:
    """FLOPs of one LoRA training step of 05: forward 2*params*tokens, backward about twice that again
    (activation gradients through the frozen weights; LoRA's own weights are small)."""
    per_layer = HIDDEN * (Q_DIM + 2 * KV_DIM) + Q_DIM * HIDDEN + 3 * HIDDEN * MLP
    params = LAYERS * per_layer + HIDDEN * VOCAB  # the tied head computes all logits
    return 3 * 2 * params * TOKENS_PER_STEP


def measure_gflops(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Matmul throughput on ``device`` in ``dtype``, with 05's MLP shapes (1024 tokens x 640 <-> 2048)."""
    x = torch.randn(TOKENS_PER_STEP, HIDDEN, device=device, dtype=dtype)
    up = torch.randn(HIDDEN, MLP, device=device, dtype=dtype)
    down = torch.randn(MLP, HIDDEN, device=device, dtype=dtype)
    flops_per = 2 * 2 * TOKENS_PER_STEP * HIDDEN * MLP

    def once() -> None:
        (x @ up) @ down
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    once()  # warm-up: kernels chosen, memory allocated
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 3:
        once()
        runs += 1
    return runs * flops_per / elapsed / 1e9


def estimate_minutes(gflops: float, dtype: torch.dtype) -> tuple[float, float]:
    """(training, whole notebook 05) minutes predicted from the matmul rate; an estimate (module docstring)."""
    cal = CAL.get(str(dtype).replace("torch.", ""), CAL["float32"])
    training = cal * STEPS * step_flops() / (gflops * 1e9) / 60
    return training, training * NOTEBOOK_PER_TRAINING


def collect(seconds: float = 1.0, workdir: Path | None = None) -> Facts:
    """Every fact the advice needs; the only slow part is ``measure_gflops`` (about ``seconds``)."""
    from ftlib.assets import ftlib_home

    device = pick()
    train = dev.train_dtype(device) if device.type != "mps" else torch.float32
    gen = dev.generation_dtype(device) if device.type != "mps" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else ("Apple silicon" if device.type == "mps"
                                                                          else _cpu_name())
    total, available = memory_gb()
    free, needed = disk_gb(ftlib_home(), workdir or Path.cwd())
    gflops = measure_gflops(device, train, seconds)
    training, notebook = estimate_minutes(gflops, train)
    return Facts(device.type, name, _dt(train), _dt(gen), dev.cpu_has_native_bf16(), os.cpu_count() or 1,
                 torch.get_num_threads(), round(total, 1), round(available, 1), round(free, 1), round(needed, 1),
                 round(gflops, 1), round(training, 1), round(notebook, 1))


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _cpu_name() -> str:
    for line in dev._cpu_flags().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform
    return platform.processor() or platform.machine()


def advise(f: Facts) -> list[str]:
    """The advice lines that follow from the facts, most important first."""
    lines = []
    if f.device == "cuda":
        lines.append("GPU: run the article's full fine-tuning: FTLIB_PROFILE=hub-gpu (notebook 05 or "
                     "`python -m ftlib.sft --config configs/sft-chat.yaml`); bf16 autocast is chosen for you.")
    elif f.device == "mps":
        lines.append("Apple silicon: training runs on MPS in fp32 - bf16 autocast and torch.compile are "
                     "unreliable there, so the course does not use them; keep the offline profile.")
    elif f.native_bf16:
        lines.append("CPU with native bf16: notebook 05 trains in bf16 autocast, as in the reference run.")
    else:
        lines.append("CPU without native bf16: notebook 05 trains in fp32 - expect about twice the reference "
                     "time (fp32 took 2.2x as long); start it before a break, or use a prepared run.")
    if f.ram_total_gb < LOW_RAM_GB:
        lines.append(f"RAM {f.ram_total_gb:.1f} GB is under {LOW_RAM_GB:.0f} GB (05 peaks at {PEAK_RAM_GB} GB): "
                     "in configs/sft-chat.yaml set batch_size: 2 and max_length: 128, close other programs, and "
                     "restart the kernel before notebooks 05 and 07 (07 peaks at 5.8 GB).")
    elif f.ram_available_gb < PEAK_RAM_GB:
        lines.append(f"only {f.ram_available_gb:.1f} GB RAM free now (05 peaks at {PEAK_RAM_GB} GB): close "
                     "other programs or kernels before notebook 05.")
    if f.disk_free_gb < f.disk_needed_gb:
        lines.append(f"disk: {f.disk_free_gb:.1f} GB free, {f.disk_needed_gb:.1f} GB needed (asset cache "
                     f"{ASSETS_GB} GB + the saved model {MODEL_GB} GB): free some space before `make assets`.")
    lines.append(f"estimate: notebook 05 trains in about {f.training_minutes:.1f} min here "
                 f"(whole notebook about {f.notebook_minutes:.1f} min); reference {REF_TRAIN_S / 60:.1f} min of "
                 f"training, {REF_NOTEBOOK_MIN} min in all, on 2 cores with native bf16. An estimate from a "
                 "1-second matmul timing, not a promise.")
    return lines


def table(f: Facts) -> str:
    """A short two-column table of the facts."""
    rows = [("device", f"{f.device} ({f.device_name})"), ("training dtype", f.train_dtype),
            ("generation dtype", f.generation_dtype), ("native bf16 on CPU", "yes" if f.native_bf16 else "no"),
            ("cores / torch threads", f"{f.cores} / {f.threads}"),
            ("RAM total / free", f"{f.ram_total_gb:.1f} / {f.ram_available_gb:.1f} GB (05 peaks at "
                                 f"{PEAK_RAM_GB} GB)"),
            ("disk free / needed", f"{f.disk_free_gb:.1f} / {f.disk_needed_gb:.1f} GB"),
            ("matmul speed", f"{f.matmul_gflops:.0f} GFLOP/s ({f.train_dtype})"),
            ("05 estimate", f"training ~{f.training_minutes:.1f} min, notebook ~{f.notebook_minutes:.1f} min")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlib.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the facts and advice as JSON")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long to time matmuls (default 1)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        print("--seconds must be positive", file=sys.stderr)
        return 2
    try:
        facts = collect(args.seconds)
    except ValueError as e:  # a bad FTLIB_CPU_GENERATION_DTYPE, said in one line
        print(e, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**asdict(facts), "advice": advise(facts)}, indent=1))
    else:
        print(table(facts))
        print()
        print("\n".join("- " + line for line in advise(facts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
