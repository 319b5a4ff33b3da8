"""The training loop: learning, exact resume, atomic checkpoints, NaN stop, LoRA merge, saving."""
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from ftlib import checkpoint
from ftlib.checkpoint import latest_checkpoint, save_finetuned
from ftlib.config import ConfigError
from ftlib.lora import add_lora, count_parameters, merge_lora, training_state_bytes
from ftlib.tiny import tiny_llama
from ftlib.train import TrainConfig, TrainingDiverged, lr_lambda, train

VOCAB = 64


def make_samples(n=24, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (length,), generator=g)
        labels = ids.clone()
        labels[: length // 3] = -100  # a "prompt" that is not trained on
        out.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long), "labels": labels})
    return out


def collate(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def loader(samples, batch_size=4, shuffle=True, hook=None):
    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            if hook:
                hook(i)
            return samples[i]

    return DataLoader(DS(), batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator() if shuffle else None)


def model(seed=0):
    return tiny_llama(vocab_size=VOCAB, seed=seed, max_positions=64).train()


def cfg(tmp_path, **kw):
    # fp32 on every machine: these tests check exact arithmetic (tests/test_device.py checks bf16 autocast)
    base = dict(output_dir=str(tmp_path), learning_rate=3e-3, max_steps=6, progress=False, seed=1, bf16=False)
    base.update(kw)
    return TrainConfig(**base)


def losses(result):
    return [round(r["loss"], 6) for r in result.history]


def test_loss_decreases_on_a_tiny_model(tmp_path):
    data = make_samples(8)
    result = train(model(), loader(data), cfg(tmp_path, max_steps=40, schedule="constant"))
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < 0.7 * first, (first, last)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {"loss", "lr", "grad_norm", "tokens_per_s"} <= rows[0].keys()
    assert all(r["seconds"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"]) for r in rows)


def test_schedules_warm_up_then_decay():
    f = lr_lambda("cosine", warmup=2, total=10)
    assert [round(f(s), 3) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert f(10) == pytest.approx(0.0) and 0 < f(6) < 1
    assert lr_lambda("linear", 0, 10)(5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda("bogus", 0, 10)(0)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    data = make_samples(16)
    big = train(model(), loader(data, 8, shuffle=False), cfg(tmp_path / "a", max_steps=2))
    acc = train(model(), loader(data, 4, shuffle=False), cfg(tmp_path / "b", max_steps=2, grad_accum=2))
    assert losses(big) == pytest.approx(losses(acc), abs=1e-5)


def test_resume_after_a_crash_gives_the_same_losses(tmp_path):
    data = make_samples()
    full = train(model(), loader(data), cfg(tmp_path / "full"))

    seen = {"n": 0}

    def crash_after_three_steps(_i):
        seen["n"] += 1
        if seen["n"] > 3 * 4:  # 4 samples per step
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(model(), loader(data, hook=crash_after_three_steps), cfg(tmp_path / "cut", save_every=3))
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-3"
    resumed = train(model(seed=99), loader(data), cfg(tmp_path / "cut", resume=True))
    assert losses(resumed) == losses(full)[3:]


def test_sigint_saves_and_resume_crosses_epoch_boundaries(tmp_path):
    data = make_samples(8)  # 2 steps per epoch: 6 steps = 3 epochs, each with its own shuffle
    full = train(model(), loader(data), cfg(tmp_path / "full"))
    # SIGINT during the 4th step: the loop finishes that step, saves, and returns
    calls = {"n": 0}

    def interrupt(_i):
        calls["n"] += 1
        if calls["n"] == 3 * 4 + 1:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = train(model(), loader(data, hook=interrupt), cfg(tmp_path / "cut"))
    assert stopped.interrupted and stopped.step == 4  # the step in progress finishes first
    resumed = train(model(seed=5), loader(data), cfg(tmp_path / "cut", resume=True))
    assert losses(stopped) + losses(resumed) == losses(full)


def test_save_final_off_writes_no_checkpoint_but_a_stop_still_saves(tmp_path):
    data = make_samples(8)
    done = train(model(), loader(data), cfg(tmp_path / "off", max_steps=2, save_final=False))
    assert done.step == 2 and latest_checkpoint(tmp_path / "off") is None
    assert (tmp_path / "off" / "metrics.jsonl").exists()  # the log is still written
    calls = {"n": 0}

    def interrupt(_i):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = train(model(), loader(data, hook=interrupt), cfg(tmp_path / "cut", save_final=False))
    assert stopped.interrupted and latest_checkpoint(tmp_path / "cut").name == f"checkpoint-{stopped.step}"


def test_the_run_records_its_config_at_start_and_resume_refuses_another(tmp_path):
    from importlib import metadata

    import transformers

    def crash(_i):
        raise RuntimeError("died in the first batch")

    with pytest.raises(RuntimeError, match="first batch"):
        train(model(), loader(make_samples(), hook=crash), cfg(tmp_path, learning_rate=2e-3))
    record = json.loads((tmp_path / "run_config.json").read_text())  # written before the first step
    assert record["config"]["learning_rate"] == 2e-3 and record["config"]["objective"] == "sft"
    assert record["versions"]["transformers"] == transformers.__version__
    assert record["versions"]["torch"] == metadata.version("torch")
    assert "git_commit" in record and not list(tmp_path.glob(".run_config.json*"))  # no temp file left

    train(model(), loader(make_samples()), cfg(tmp_path, max_steps=2, learning_rate=2e-3))
    with pytest.raises(ConfigError, match=r"learning_rate: 0.002 -> 0.003.*--resume-force"):
        train(model(), loader(make_samples()), cfg(tmp_path, max_steps=2, learning_rate=3e-3, resume=True))
    assert json.loads((tmp_path / "run_config.json").read_text())["config"]["learning_rate"] == 2e-3
    # what is shown and saved may change; with force, anything may, and the record says what changed
    train(model(), loader(make_samples()), cfg(tmp_path, max_steps=2, learning_rate=2e-3, save_every=5,
                                               progress=False, resume=True))
    forced = train(model(), loader(make_samples()), cfg(tmp_path, max_steps=3, learning_rate=3e-3, resume_force=True))
    assert [r["step"] for r in forced.history] == [3]
    record = json.loads((tmp_path / "run_config.json").read_text())
    assert record["changed_on_resume"] == {"learning_rate": [2e-3, 3e-3], "max_steps": [2, 3]}


def test_configs_fail_when_made_naming_the_key_and_the_fix():
    with pytest.raises(ConfigError, match="schedule 'cosin': choose one of cosine, linear, constant"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ConfigError, match="learning_rate=0.0: must be > 0"):
        TrainConfig(learning_rate=0.0)
    with pytest.raises(ConfigError, match="grad_accum='2': expected a whole number"):
        TrainConfig(grad_accum="2")
    with pytest.raises(ConfigError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ConfigError, match="bf16"):
        TrainConfig(bf16="yes")
    # normalised: YAML's 1e-4 (a string in YAML 1.1), a list for a tuple, an int for a float, a Path for a str
    c = TrainConfig(learning_rate="1e-4", betas=[0.9, 0.95], weight_decay=0, output_dir=Path("out"))
    assert (c.learning_rate, c.betas, c.weight_decay, c.output_dir) == (1e-4, (0.9, 0.95), 0.0, "out")


def test_a_kill_between_checkpoint_files_leaves_the_last_good_one(tmp_path, monkeypatch):
    m = model()
    train(m, loader(make_samples()), cfg(tmp_path, max_steps=2, save_every=1))
    good = latest_checkpoint(tmp_path)
    assert good.name == "checkpoint-2"

    def killed(*a, **k):  # the weights file is written, then the process "dies" before the state file
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint.torch, "save", killed)
    opt = torch.optim.AdamW(m.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, m, opt, sched, {"step": 3, "epoch": 0, "batch": 0})
    assert latest_checkpoint(tmp_path) == good
    assert not (tmp_path / "checkpoint-3").exists()
    # a temp directory left by a real kill (no cleanup ran) is ignored too
    (tmp_path / ".checkpoint-4.abc.tmp").mkdir()
    assert latest_checkpoint(tmp_path) == good


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    m = model()
    calls = {"n": 0}

    def poison(_i):
        calls["n"] += 1
        if calls["n"] == 4 * 2 + 1:  # during step 3: break the weights
            with torch.no_grad():
                m.model.embed_tokens.weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="step 3.*intact"):
        train(m, loader(make_samples(), hook=poison), cfg(tmp_path, save_every=1))
    good = latest_checkpoint(tmp_path)
    assert good.name == "checkpoint-2"
    fresh = model(seed=3)
    checkpoint.load_weights(good, fresh)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_lora_trains_few_parameters_and_merges_to_the_same_logits(tmp_path):
    peft_model = add_lora(model(), r=4, alpha=8)
    counts = count_parameters(peft_model)
    assert 0 < counts["trainable"] < 0.2 * counts["total"]
    train(peft_model, loader(make_samples()), cfg(tmp_path, max_steps=3, learning_rate=1e-2))
    x = torch.randint(3, VOCAB, (2, 10))
    peft_model.eval()
    with torch.no_grad():
        adapter_logits = peft_model(input_ids=x).logits
        assert not torch.allclose(adapter_logits, model()(input_ids=x).logits, atol=1e-4), "LoRA must have learned"
        merged = merge_lora(peft_model)
        assert type(merged).__name__ == "LlamaForCausalLM"
        torch.testing.assert_close(merged(input_ids=x).logits, adapter_logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("lora", [False, True])
def test_training_state_bytes_equals_what_adamw_really_holds(lora):
    m = add_lora(model(), r=4, alpha=8) if lora else model()
    optimizer = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad])
    m(**collate(make_samples(2))).loss.backward()
    optimizer.step()
    held = sum(t.numel() * t.element_size() for p in m.parameters()
               for t in [p, p.grad, *optimizer.state[p].values()] if t is not None and t.dim() > 0)  # not `step`
    assert training_state_bytes(m) == held
    frozen = sum(p.numel() * 4 for p in m.parameters() if not p.requires_grad)
    assert (frozen > 0) == lora


def test_adapter_on_disk_is_a_small_fraction_of_the_merged_model(tmp_path, tokenizer):
    from ftlib.tiny import tiny_llama_for

    peft_model = add_lora(tiny_llama_for(tokenizer, hidden_size=64), r=2, alpha=4)
    peft_model.save_pretrained(tmp_path / "adapter")
    save_finetuned(peft_model, tokenizer, tmp_path / "merged")
    adapter, merged = checkpoint.directory_bytes(tmp_path / "adapter"), checkpoint.directory_bytes(tmp_path / "merged")
    counts = count_parameters(merge_lora(peft_model))
    assert 0 < adapter < 0.1 * merged and merged > 4 * counts["total"]  # fp32 weights + tokenizer files


def test_saved_model_reloads_and_generates(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftlib.templates import ARTICLE_CHAT_TEMPLATE
    from ftlib.tiny import tiny_llama_for

    m = tiny_llama_for(tokenizer)
    own_template = tokenizer.chat_template
    path = save_finetuned(m, tokenizer, tmp_path / "out", chat_template=ARTICLE_CHAT_TEMPLATE)
    assert tokenizer.chat_template == own_template  # saved with the article's; the caller's tokenizer untouched
    assert sorted(p.name for p in path.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(path.glob("*.pth")) and not list(path.glob("*.bin"))
    again = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template == ARTICLE_CHAT_TEMPLATE
    ids = tok("Hello", return_tensors="pt").input_ids
    out1 = m.generate(ids, max_new_tokens=5, do_sample=False)
    out2 = again.generate(ids, max_new_tokens=5, do_sample=False)
    assert out1.shape[1] > ids.shape[1] and torch.equal(out1, out2)
