"""`python -m ftlib.sft` end to end on a tiny model: config parsing, one process, and torchrun with two."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftlib.mixture import MixtureConfig
from ftlib.sft import ConfigError, SFTConfig, load_config, parse_config, prepare_samples
from ftlib.templates import ARTICLE_CHAT_TEMPLATE
from ftlib.tiny import tiny_llama_for

pytestmark = pytest.mark.slow  # the unit-slow job of `make test` (subprocesses, real models, minutes)

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama_for(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    rows = [{"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."} for i in range(16)]
    (path / "data.json").write_text(json.dumps(rows))
    return path


def _cfg_file(tiny_dir, out, **extra):
    cfg = {"model": str(tiny_dir), "dataset": str(tiny_dir / "data.json"), "format": "chat", "max_length": 64,
           "strategy": "dynamic", "batch_size": 4, "eval_fraction": 0,
           # fp32: one process and two must agree to float rounding (bf16 autocast is on by default on CPUs with
           # native bf16, and its rounding differs between a batch of 4 and two of 2)
           "train": {"output_dir": str(out), "max_steps": 3, "learning_rate": 1e-3, "progress": False, "bf16": False}}
    cfg.update(extra)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: base\nmax_length: 128\ntrain:\n  learning_rate: 2.0e-5\n  max_steps: 7\n")
    cfg = parse_config(["--config", str(path), "--max-steps", "9", "--lora", "--betas", "0.9", "0.95"])
    assert (cfg.model, cfg.max_length, cfg.lora) == ("base", 128, True)
    assert (cfg.train.learning_rate, cfg.train.max_steps, cfg.train.betas) == (2e-5, 9, (0.9, 0.95))
    path.write_text("modle: base\n")
    with pytest.raises(ConfigError, match="modle"):
        parse_config(["--config", str(path)])
    with pytest.raises(ConfigError, match="lora and fsdp"):
        parse_config(["--lora", "--fsdp"])


def test_a_profiles_block_goes_on_top_of_the_yaml_and_flags_on_top_of_both(tmp_path, monkeypatch):
    """Notebook 05 and the CLI read configs/sft-chat.yaml; the active profile's block changes only what it names."""
    path = tmp_path / "c.yaml"
    path.write_text("model: base\nlora: true\nmixture: {chats: 7, eval_records: 3}\ntrain: {max_steps: 5}\n"
                    "profiles:\n  hub-gpu: {lora: false, mixture: {chats: 9}, train: {epochs: 2, max_steps: null}}\n")
    monkeypatch.delenv("FTLIB_PROFILE", raising=False)
    offline = load_config(path)
    assert (offline.lora, offline.mixture.chats, offline.mixture.eval_records, offline.train.max_steps) == \
        (True, 7, 3, 5)
    gpu = load_config(path, "hub-gpu")  # nested blocks merge key by key: eval_records stays 3
    assert (gpu.lora, gpu.mixture.chats, gpu.mixture.eval_records, gpu.train.max_steps, gpu.train.epochs) == \
        (False, 9, 3, None, 2)
    monkeypatch.setenv("FTLIB_PROFILE", "hub-gpu")  # the notebook's and the CLI's default profile
    assert parse_config(["--config", str(path), "--lora"]).lora  # a flag beats the profile's block
    assert not parse_config(["--config", str(path)]).lora
    path.write_text("model: base\nprofiles:\n  gpu: {lora: false}\n")
    with pytest.raises(ConfigError, match="profiles: gpu is not a profile; use offline, "):
        load_config(path)


def test_the_shipped_chat_config_is_notebook_05s_run_for_every_profile():
    for name in ("offline", "hub-cpu", "hub-gpu", "tiny"):
        cfg = load_config(CONFIGS / "sft-chat.yaml", name)
        assert cfg.dataset == "mixture" and cfg.format == "article-chat" and cfg.overlong == "drop"
        assert cfg.train.output_dir == f"outputs/sft-chat-{name}"  # where notebook 06 looks for the model
    offline, gpu = load_config(CONFIGS / "sft-chat.yaml", "offline"), load_config(CONFIGS / "sft-chat.yaml", "hub-gpu")
    assert offline.lora and offline.train.max_steps == 48 and offline.train.learning_rate == 6e-4
    # the recipe benchmarks/recipes.py chose (docs/benchmarks.md)
    assert offline.mixture == MixtureConfig(instructions=280, chats=60, max_output_chars=300)
    assert not gpu.lora and gpu.max_length == 1024 and gpu.train.max_steps is None


def test_chat_format_records_the_template_it_trained_with(tokenizer, tiny_dir):
    import datasets

    records = datasets.load_dataset("json", data_files=str(tiny_dir / "data.json"), split="train")
    cfg = SFTConfig(format="article-chat", eval_fraction=0)
    train_tok, _, template, report = prepare_samples(cfg, tokenizer, records)
    assert template == ARTICLE_CHAT_TEMPLATE and report.kept == 16
    first = train_tok[0]
    trained = tokenizer.decode([t for t, label in zip(first["input_ids"], first["labels"]) if label != -100])
    assert trained == "The number is 0.\n" + tokenizer.eos_token  # the response and its end token, nothing else


def _run(args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def _in_process(args) -> int:
    """``python -m ftlib.sft ARGS`` in this process, on one thread like ``_run``'s: where the test compares runs, a
    fresh interpreter adds seconds of imports and checks nothing more (the CLI's own process is tested above)."""
    import torch

    from ftlib.sft import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_trains_saves_records_its_config_and_resumes_only_the_same_run(tmp_path, tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlib.checkpoint import latest_checkpoint, load_weights

    out = tmp_path / "one"
    config = _cfg_file(tiny_dir, out)
    r = _run([sys.executable, "-m", "ftlib.sft", "--config", str(config)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_losses(out)) == 3
    # the saved model holds the trained weights (those of the final checkpoint), not the starting ones
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    start = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out / "final")
    load_weights(latest_checkpoint(out), trained)
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert AutoTokenizer.from_pretrained(out / "final").chat_template
    # the run recorded what it was: model, data, lengths, LoRA, the resolved profile, versions, commit
    record = json.loads((out / "run_config.json").read_text())
    c = record["config"]
    assert (c["model"], c["dataset"], c["max_length"], c["lora"], c["profile"]) == (
        str(tiny_dir), str(tiny_dir / "data.json"), 64, False, os.environ.get("FTLIB_PROFILE", "offline"))
    assert c["train"]["max_steps"] == 3 and record["versions"]["torch"] and "git_commit" in record
    # resuming it under another config is refused, in one line, before anything loads; --resume-force goes on
    r = _run([sys.executable, "-m", "ftlib.sft", "--config", str(config), "--resume", "--max-steps", "4",
              "--learning-rate", "0.002"])
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert "max_steps: 3 -> 4" in r.stderr and "learning_rate: 0.001 -> 0.002" in r.stderr
    assert "--resume-force" in r.stderr
    r = _run([sys.executable, "-m", "ftlib.sft", "--config", str(config), "--resume-force", "--max-steps", "4"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert json.loads((out / "run_config.json").read_text())["changed_on_resume"] == {"train.max_steps": [3, 4]}


@pytest.fixture(scope="module")
def one_process_losses(tmp_path_factory, tiny_dir):
    """The one-process run both torchrun tests compare with (the same for DDP and FSDP: run it once)."""
    one = tmp_path_factory.mktemp("one") / "one"
    assert _in_process(["--config", _cfg_file(tiny_dir, one), "--batch-size", "4"]) == 0
    return _losses(one)


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(tmp_path, tiny_dir, one_process_losses, engine):
    two = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    flags = ["--fsdp"] if engine == "fsdp" else []
    r2 = _run([*torchrun, "-m", "ftlib.sft", "--config", str(_cfg_file(tiny_dir, two)), "--batch-size", "2", *flags])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (two / "final" / "model.safetensors").exists()
    assert _losses(two) == pytest.approx(one_process_losses, abs=1e-5)  # same global batches, same losses



# Resume inside the second epoch: 16 samples of varied length, 4 batches an epoch, 10 steps = 2.5 epochs, and
# checkpoint-6 (save_every 6) sits in the middle of the second epoch. The final weights must equal bit for bit.
RESUME_RUNS = {"pad": dict(batch_size=4, max_length=64), "dynamic": dict(batch_size=4, max_length=64),
               "packed": dict(batch_size=2, max_length=128)}  # packed: about two samples a row, 8 rows

# `python -m ftlib.sft`, parked after writing a checkpoint inside the second epoch, so that the test SIGKILLs it
# there: a real kill (no handler runs, no final save) at a known place.
PARK_IN_SECOND_EPOCH = """
import sys, time
import ftlib.train
save = ftlib.train._save
def park(stepper, progress, *rest):
    save(stepper, progress, *rest)
    if progress["epoch"] == 1:
        time.sleep(300)
ftlib.train._save = park
from ftlib.sft import main
sys.exit(main(sys.argv[1:]))
"""


def _sigkill_at_checkpoint(config, out, name):
    """Run the parked CLI until ``out/latest`` names checkpoint ``name``, then SIGKILL it."""
    import signal
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", PARK_IN_SECOND_EPOCH, "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "latest").exists() and (out / "latest").read_text() == name):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, f"no {name} after 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "final").exists()


# SIGKILL for dynamic (whose sampler once counted epochs in memory); pad and packed resume from a copy of the
# uninterrupted run's own checkpoint-6, which is what a killed run leaves (deterministic, one process less).
@pytest.mark.parametrize("strategy,sigkill", [("pad", False), ("dynamic", True), ("packed", False)])
def test_resume_in_the_second_epoch_gives_the_same_weights(tmp_path, tiny_dir, strategy, sigkill):
    import shutil

    import torch
    from safetensors.torch import load_file

    rows = [{"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}." + " Yes." * (i % 5)}
            for i in range(16)]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    configs = {}
    for name in ("full", "cut"):
        out = tmp_path / name
        configs[name] = _cfg_file(tiny_dir, out, dataset=str(tmp_path / "data.json"), strategy=strategy,
                                  **RESUME_RUNS[strategy], train={"output_dir": str(out), "max_steps": 10,
                                                                  "save_every": 6, "learning_rate": 1e-3,
                                                                  "progress": False})
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _in_process(["--config", configs["full"]]) == 0
    epochs = [json.loads(line)["epoch"] for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0] * 4 + [1] * 4 + [2] * 2
    assert json.loads((full / "checkpoint-6" / "progress.json").read_text()) == {"step": 6, "epoch": 1, "batch": 2}

    if sigkill:
        _sigkill_at_checkpoint(configs["cut"], cut, "checkpoint-6")
    else:
        shutil.copytree(full / "checkpoint-6", cut / "checkpoint-6")
        (cut / "latest").write_text("checkpoint-6")
    assert _in_process(["--config", configs["cut"], "--resume"]) == 0
    assert _losses(cut) == (_losses(full) if sigkill else _losses(full)[6:])  # the same batches, step by step
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(cut / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
