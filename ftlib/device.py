"""Choose the device and dtypes once, so every notebook and script agrees.

Training: bf16 on CUDA (autocast), fp32 elsewhere. Generation: the fastest dtype that is *correct* on this
machine - bf16 on CUDA and on CPUs with native bf16 instructions (AVX512-BF16 / AMX), else fp32. We detect
the CPU feature instead of assuming it: on a CPU without it bf16 matmuls are emulated and slower than fp32.
"""
from __future__ import annotations

import functools
import platform

import torch


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (x86 avx512_bf16 or amx_bf16, Arm bf16)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    if platform.machine() in ("x86_64", "AMD64"):
        return " avx512_bf16" in flags or " amx_bf16" in flags
    return " bf16" in flags


def train_dtype(device: torch.device | None = None) -> torch.dtype:
    """Autocast dtype for training: bf16 on CUDA, fp32 on CPU (CPU bf16 training loses too much precision)."""
    device = device or pick_device()
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def generation_dtype(device: torch.device | None = None) -> torch.dtype:
    """Fastest correct dtype for sampling on ``device``."""
    device = device or pick_device()
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


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
