"""ftlib.device: native-bf16 detection honours pinned kernel paths; training and generation dtypes follow it."""
import pytest
import torch

from ftlib import device
from ftlib.batching import PackingCollator
from ftlib.tiny import tiny_llama
from ftlib.train import TrainConfig, train

PIN_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", device.GENERATION_ENV)


@pytest.fixture()
def cpu(monkeypatch):
    """An x86 CPU whose flags we choose, with no kernel pin in the environment."""
    for var in PIN_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")

    def set_flags(flags: str):
        monkeypatch.setattr(device, "_cpu_flags", lambda: f"flags\t\t: fpu sse4_1 avx2 {flags}\n")
    set_flags("avx512f avx512_bf16")
    return set_flags


def test_native_bf16_needs_the_cpu_flag(cpu):
    assert device.cpu_has_native_bf16()
    cpu("avx512f amx_bf16 amx_tile")
    assert device.cpu_has_native_bf16()
    cpu("avx512f")
    assert not device.cpu_has_native_bf16()


@pytest.mark.parametrize("var,value,native", [
    ("ATEN_CPU_CAPABILITY", "avx2", False), ("ATEN_CPU_CAPABILITY", "default", False),
    ("ATEN_CPU_CAPABILITY", "AVX2", False), ("ATEN_CPU_CAPABILITY", "avx512", True),
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False), ("ONEDNN_MAX_CPU_ISA", "SSE41", False), ("ONEDNN_MAX_CPU_ISA", "AVX", False),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", False), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True), ("ONEDNN_MAX_CPU_ISA", "ALL", True),
    ("DNNL_MAX_CPU_ISA", "avx2", False),
])
def test_a_pinned_kernel_path_below_bf16_means_not_native(cpu, monkeypatch, var, value, native):
    monkeypatch.setenv(var, value)
    assert device.cpu_has_native_bf16() is native
    assert device.train_dtype(torch.device("cpu")) == (torch.bfloat16 if native else torch.float32)


def test_training_dtype_is_bf16_on_cuda_and_native_cpus(cpu):
    assert device.train_dtype(torch.device("cuda")) == torch.bfloat16
    assert device.train_dtype(torch.device("cpu")) == torch.bfloat16
    cpu("avx512f")
    assert device.train_dtype(torch.device("cpu")) == torch.float32


def test_cpu_generation_is_fp32_unless_asked(cpu, monkeypatch):
    cpu_dev = torch.device("cpu")
    assert device.generation_dtype(cpu_dev) == torch.float32  # even with native bf16
    assert device.generation_dtype(torch.device("cuda")) == torch.bfloat16
    assert device.generation_dtype(cpu_dev, cpu_dtype="bf16") == torch.bfloat16
    assert device.generation_dtype(cpu_dev, cpu_dtype="auto") == torch.bfloat16
    monkeypatch.setenv(device.GENERATION_ENV, "auto")
    assert device.generation_dtype(cpu_dev) == torch.bfloat16
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert device.generation_dtype(cpu_dev) == torch.float32  # auto: bf16 only where native
    monkeypatch.setenv(device.GENERATION_ENV, "fp16")
    with pytest.raises(ValueError, match="FTLIB_CPU_GENERATION_DTYPE.*fp32, bf16 or auto"):
        device.generation_dtype(cpu_dev)


@pytest.mark.parametrize("bf16,native,autocast", [
    (None, True, True), (None, False, False), (True, False, True), (False, True, False)])
def test_train_autocasts_to_bf16_where_native_unless_told(cpu, tmp_path, bf16, native, autocast):
    cpu("avx512f avx512_bf16" if native else "avx512f")
    model = tiny_llama(vocab_size=64, max_positions=32).train()
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.get_autocast_dtype("cpu")
                                                          if torch.is_autocast_enabled("cpu") else None))
    rows = [{"input_ids": list(range(3, 11)), "labels": list(range(3, 11))}] * 2
    batches = [PackingCollator(0, max_length=16)([rows])]  # a packed batch: fp32 4D mask under bf16 autocast
    result = train(model, batches, TrainConfig(output_dir=str(tmp_path), max_steps=1, bf16=bf16, progress=False,
                                               save_final=False))
    assert seen == [torch.bfloat16 if autocast else None]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast only: fp32 master weights
    assert torch.isfinite(torch.tensor(result.history[0]["loss"]))
