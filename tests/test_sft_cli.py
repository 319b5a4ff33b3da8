"""`python -m ftlib.sft` end to end on a tiny model: config parsing, one process, and torchrun with two."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from ftlib.sft import SFTConfig, parse_config, prepare_samples
from ftlib.templates import ARTICLE_CHAT_TEMPLATE
from ftlib.testing import tiny_llama_for


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
           "train": {"output_dir": str(out), "max_steps": 3, "learning_rate": 1e-3, "progress": False}}
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
    with pytest.raises(SystemExit, match="modle"):
        parse_config(["--config", str(path)])
    with pytest.raises(SystemExit, match="lora and fsdp"):
        parse_config(["--lora", "--fsdp"])


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


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_trains_and_saves_a_loadable_model(tmp_path, tiny_dir):
    out = tmp_path / "one"
    r = _run([sys.executable, "-m", "ftlib.sft", "--config", str(_cfg_file(tiny_dir, out))])
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_losses(out)) == 3
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert AutoTokenizer.from_pretrained(out / "final").chat_template
    assert model.num_parameters() > 0


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(tmp_path, tiny_dir, engine):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run([sys.executable, "-m", "ftlib.sft", "--config", str(_cfg_file(tiny_dir, one)), "--batch-size", "4"])
    assert r1.returncode == 0, r1.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    flags = ["--fsdp"] if engine == "fsdp" else []
    r2 = _run([*torchrun, "-m", "ftlib.sft", "--config", str(_cfg_file(tiny_dir, two)), "--batch-size", "2", *flags])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (two / "final" / "model.safetensors").exists()
    assert _losses(two) == pytest.approx(_losses(one), abs=1e-5)  # same global batches, same losses
