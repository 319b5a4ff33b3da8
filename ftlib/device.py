"""Choose the device and dtypes once, so every notebook and script agrees.

Training: bf16 autocast (weights and optimizer state stay fp32) where the hardware runs bf16 natively - CUDA, and
CPUs with AVX512-BF16 / AMX (or Arm bf16) that this process is allowed to use - else fp32. We detect the CPU
feature instead of assuming it: without it bf16 matmuls are emulated and slower than fp32.
Generation: bf16 on CUDA, fp32 on CPU unless bf16 is shown faster and asked for (see ``generation_dtype``).
"""
from __future__ import annotations

import functools
import os
import platform

import torch

GENERATION_ENV = "FTLIB_CPU_GENERATION_DTYPE"  # fp32 (default) | bf16 | auto (bf16 where native)
_BF16_ONEDNN_ISAS = ("BF16", "AMX", "AVX10", "FP16")  # oneDNN ISA caps that include bf16 dot products


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@functools.cache
def _cpu_flags() -> str:
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return ""


def kernels_allow_bf16(env: dict | None = None) -> bool:
    """False when this process's kernels are pinned below bf16: ``ATEN_CPU_CAPABILITY`` under avx512 (avx2,
    default) or ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` without AVX512_CORE_BF16 / AMX (AVX2, AVX, SSE41).
    The CPU may have the instructions, but PyTorch will not use them, so bf16 runs emulated."""
    env = os.environ if env is None else env
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten and not aten.startswith(("avx512", "sve")):
        return False
    isa = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return not isa or isa in ("ALL", "DEFAULT") or any(k in isa for k in _BF16_ONEDNN_ISAS)


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (x86 avx512_bf16 or amx_bf16, Arm bf16) and this
    process's kernels may use them (``kernels_allow_bf16``)."""
    if not kernels_allow_bf16():
        return False
    flags = _cpu_flags()
    if platform.machine() in ("x86_64", "AMD64"):
        return " avx512_bf16" in flags or " amx_bf16" in flags
    return " bf16" in flags


def train_dtype(device: torch.device | None = None) -> torch.dtype:
    """Autocast dtype for training: bf16 on CUDA and on CPUs with native bf16, else fp32 (no autocast).

    Only the matmuls run in bf16; weights, gradients and AdamW's state stay fp32, and the loss is computed in fp32.
    ``TrainConfig(bf16=True/False)`` overrides this."""
    device = device or pick_device()
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return torch.float32


def generation_dtype(device: torch.device | None = None, cpu_dtype: str | None = None) -> torch.dtype:
    """Dtype for sampling on ``device``: bf16 on CUDA; on CPU fp32 unless ``cpu_dtype`` (or the environment
    variable FTLIB_CPU_GENERATION_DTYPE) says ``"bf16"`` (always) or ``"auto"`` (bf16 where the CPU has it natively).

    The rule: fp32 on CPU unless bf16 is *shown* faster on your machine - by you, with ``python -m
    benchmarks.generation``, which then tells you to set the variable; nothing here times anything. Why: decoding
    reads every weight for every token, and how much of the memory bandwidth the bf16 kernels reach depends on the
    machine, not on the instruction set alone (on the course's 2-core AVX512-BF16 machine bf16 decoded 1.4x faster,
    at a quarter of its roofline: docs/benchmarks.md). fp32 is never emulated, never less exact, and gives the same
    tokens on every CPU - including CI's runs with kernels pinned to AVX2, where bf16 would be emulated.
    """
    device = device or pick_device()
    if device.type == "cuda":
        return torch.bfloat16
    choice = (cpu_dtype or os.environ.get(GENERATION_ENV) or "fp32").strip().lower()
    if choice in ("fp32", "float32"):
        return torch.float32
    if choice in ("bf16", "bfloat16"):
        return torch.bfloat16
    if choice == "auto":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    raise ValueError(f"CPU generation dtype {choice!r} (cpu_dtype or {GENERATION_ENV}): use fp32, bf16 or auto")


def environment_report() -> dict[str, str]:
    """Versions and hardware facts a learner (or a bug report) needs first."""
    import datasets
    import transformers

    device = pick_device()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "cpu threads": str(torch.get_num_threads()),
        "native bf16 on CPU": str(cpu_has_native_bf16()),
        "training dtype": str(train_dtype(device)).replace("torch.", ""),
        "generation dtype": str(generation_dtype(device)).replace("torch.", ""),
    }
