"""The machine check: each backend branch with the hardware faked, the RAM/disk readings, the estimate's scaling."""
from __future__ import annotations

import json
from collections import namedtuple

import pytest
import torch

from ftlib import device as dev
from ftlib import doctor

Usage = namedtuple("Usage", "total used free")
REAL_MEMORY_GB = doctor.memory_gb


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake machine: CPU only, native bf16, 16 GB RAM (12 free), 100 GB disk, 400 GFLOP/s; tests change parts."""
    state = {"cuda": False, "mps": False, "bf16": True, "total_kb": 16 * 2**20, "avail_kb": 12 * 2**20,
             "free_gb": 100.0, "gflops": {"bfloat16": 400.0, "float32": 180.0}}
    meminfo = tmp_path / "meminfo"

    def fake_memory():  # the real parser, on a /proc/meminfo written from the state
        meminfo.write_text(f"MemTotal:       {state['total_kb']} kB\nMemFree:  1 kB\n"
                           f"MemAvailable:   {state['avail_kb']} kB\n")
        return REAL_MEMORY_GB(str(meminfo))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["cuda"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake H100")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: state["mps"])
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: state["bf16"])
    monkeypatch.setattr(doctor, "memory_gb", fake_memory)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: Usage(0, 0, int(state["free_gb"] * 2**30)))
    monkeypatch.setattr(doctor, "measure_gflops", lambda d, dt, s: state["gflops"][str(dt).split(".")[1]])
    monkeypatch.setenv("FTLIB_HOME", str(tmp_path / "empty-cache"))
    return state


def run(tmp_path) -> tuple[doctor.Facts, str]:
    facts = doctor.collect(workdir=tmp_path)
    return facts, "\n".join(doctor.advise(facts))


def test_cpu_with_native_bf16_trains_in_bf16_and_matches_the_reference(machine, tmp_path):
    facts, advice = run(tmp_path)
    assert (facts.device, facts.train_dtype, facts.generation_dtype, facts.native_bf16) == \
        ("cpu", "bfloat16", "float32", True)
    assert "native bf16" in advice and "twice" not in advice
    # the calibration: the reference machine's measured rate (380 GFLOP/s) predicts its reference training time
    training, notebook = doctor.estimate_minutes(380.0, torch.bfloat16)
    assert training == pytest.approx(doctor.REF_TRAIN_S / 60, rel=0.02)
    assert notebook == pytest.approx(doctor.REF_NOTEBOOK_MIN, rel=0.02)
    assert facts.training_minutes == pytest.approx(training * 380 / 400, abs=0.05)


def test_cpu_without_bf16_trains_in_fp32_and_says_twice_the_time(machine, tmp_path):
    machine["bf16"] = False
    facts, advice = run(tmp_path)
    assert (facts.train_dtype, facts.native_bf16) == ("float32", False)
    assert "without native bf16" in advice and "twice" in advice
    # the reference machine's fp32 rate (176 GFLOP/s) gives 2.2x its bf16 training time
    assert doctor.estimate_minutes(176.0, torch.float32)[0] == pytest.approx(2.2 * doctor.REF_TRAIN_S / 60, rel=0.02)


def test_cuda_advises_the_articles_full_fine_tuning(machine, tmp_path):
    machine["cuda"] = True
    facts, advice = run(tmp_path)
    assert (facts.device, facts.device_name, facts.train_dtype, facts.generation_dtype) == \
        ("cuda", "Fake H100", "bfloat16", "bfloat16")
    assert "FTLIB_PROFILE=hub-gpu" in advice and "full fine-tuning" in advice


def test_mps_trains_in_fp32_and_warns_about_bf16_and_compile(machine, tmp_path):
    machine["mps"] = True
    facts, advice = run(tmp_path)
    assert (facts.device, facts.train_dtype, facts.generation_dtype) == ("mps", "float32", "float32")
    assert "MPS in fp32" in advice and "bf16" in advice and "compile" in advice


def test_low_ram_says_what_to_change(machine, tmp_path):
    machine["total_kb"], machine["avail_kb"] = 6 * 2**20, 5 * 2**20
    facts, advice = run(tmp_path)
    assert (facts.ram_total_gb, facts.ram_available_gb) == (6.0, 5.0)
    assert "under 8 GB" in advice and "batch_size: 2" in advice and "max_length: 128" in advice


def test_enough_ram_but_little_free_says_close_programs(machine, tmp_path):
    machine["avail_kb"] = 3 * 2**20
    _, advice = run(tmp_path)
    assert "3.0 GB RAM free" in advice and "under 8 GB" not in advice


def test_low_disk_counts_the_cache_still_to_fetch(machine, tmp_path):
    machine["free_gb"] = 2.0
    facts, advice = run(tmp_path)
    assert facts.disk_needed_gb == pytest.approx(doctor.ASSETS_GB + doctor.MODEL_GB, abs=0.05)
    assert "2.0 GB free, 3.3 GB needed" in advice


def test_fetched_cache_leaves_only_the_model_to_find_room_for(machine, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / "big.bin", "wb") as f:  # a sparse file counted by its size, as du -s --apparent-size
        f.truncate(int(2.5 * 2**30))
    monkeypatch.setenv("FTLIB_HOME", str(cache))
    machine["free_gb"] = 2.0
    facts, advice = run(tmp_path)
    assert facts.disk_needed_gb == doctor.MODEL_GB and "disk:" not in advice


def test_healthy_machine_gets_no_warnings(machine, tmp_path):
    _, advice = run(tmp_path)
    assert "RAM" not in advice and "disk" not in advice


def test_memory_falls_back_to_sysconf_without_proc(tmp_path):
    total, available = doctor.memory_gb(str(tmp_path / "no-such-file"))
    assert total > 0 and available == total


def test_estimate_scales_inversely_with_speed():
    slow, fast = doctor.estimate_minutes(100.0, torch.bfloat16), doctor.estimate_minutes(200.0, torch.bfloat16)
    assert slow[0] == pytest.approx(2 * fast[0]) and slow[1] == pytest.approx(2 * fast[1])


def test_measured_matmul_rate_is_plausible():
    gflops = doctor.measure_gflops(torch.device("cpu"), torch.float32, seconds=0.1)
    assert 1 < gflops < 1e5


def test_cli_json_and_table(machine, capsys):
    assert doctor.main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_dtype"] == "bfloat16" and out["advice"][-1].startswith("estimate:")
    assert doctor.main([]) == 0
    text = capsys.readouterr().out
    assert "training dtype" in text and "- estimate:" in text
    assert doctor.main(["--seconds", "0"]) == 2


def test_bad_generation_dtype_setting_is_one_line_and_exit_2(machine, monkeypatch, capsys):
    monkeypatch.setenv("FTLIB_CPU_GENERATION_DTYPE", "fp8")
    assert doctor.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FTLIB_CPU_GENERATION_DTYPE" in err
