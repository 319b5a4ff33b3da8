"""GPU run for issue 8: ftlib's SFT loop in bf16 at seq 1024 with packing — tokens/s, peak memory, MFU.

    python -m benchmarks.sft_gpu            # on a CUDA machine (about 5 minutes on one H100)
    python -m benchmarks.sft_gpu --tiny     # a seconds-long CPU smoke run of the same code path

Needs torch + transformers only (no `datasets`, no hub): models are built from configs with random weights
(throughput does not depend on the weights) and the data are synthetic samples with Alpaca-like lengths,
packed into 1024-token rows with ftlib's collator. The ratio to TRL is `python -m benchmarks.sft`, which runs on
CUDA too (bf16, and prints MFU) but needs `trl` and `datasets`, which the lent GPU machine does not have.

MFU = 6 x N x tokens/s / peak, with N the parameter count (the PaLM convention without the attention term, so it
slightly understates the work done). Peak: dense bf16 of the device (989 TFLOP/s for H100/H200 SXM).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlib.batching import PackingCollator, pack_groups
from ftlib.checkpoint import load_weights, save_checkpoint
from ftlib.train import TrainConfig, train

PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
CONFIGS = {  # shapes of the public models' config.json files
    "smollm2-360m": dict(vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, tie_word_embeddings=True),
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                         rope_theta=500000.0),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}


def packed_batches(vocab: int, rows: int, steps: int, seq: int, seed: int = 0, learnable: bool = False):
    """Synthetic samples (lengths like the Alpaca demo: 60-760 tokens), packed into rows of ``seq`` tokens."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    while sum(len(s["input_ids"]) for s in samples) < rows * steps * seq * 1.05:
        n = int(torch.randint(60, min(760, seq), (1,), generator=g))
        if learnable:  # a repeating pattern: a real model can learn it, so the loss must fall
            start = int(torch.randint(0, vocab - 16, (1,), generator=g))
            ids = [start + (i % 16) for i in range(n)]
        else:
            ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        samples.append({"input_ids": ids, "labels": [-100] * (n // 4) + ids[n // 4:]})
    groups = pack_groups([len(s["input_ids"]) for s in samples], seq)
    collate = PackingCollator(pad_token_id=0, max_length=seq)  # fp32 mask: sdpa accepts it with bf16 queries
    rows_all = [[samples[i] for i in grp] for grp in groups]
    return [collate(rows_all[k * rows:(k + 1) * rows]) for k in range(steps)]


def bench(name: str, rows: int, steps: int, seq: int, compile: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=max(seq, 2048), **CONFIGS[name])
    model = LlamaForCausalLM(config).to(device)
    batches = packed_batches(config.vocab_size, rows, steps, seq)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(output_dir=out, max_steps=steps, learning_rate=1e-4, compile=compile, progress=False,
                          save_final=False)
        result = train(model, batches, cfg)
    skip = 3 if steps > 4 else 1  # warm-up (and compilation) steps
    real = [int((b["labels"] != -100).sum()) for b in batches]  # trained tokens, the loop's own count
    seconds = [r["seconds"] for r in result.history]
    tokens_in = [int((b["position_ids"] >= 0).sum()) for b in batches]  # all tokens in the rows (pads included)
    tps = sum(tokens_in[skip:]) / sum(seconds[skip:])
    row = {"model": name, "params_M": model.num_parameters() / 1e6, "compile": compile, "rows x seq": f"{rows}x{seq}",
           "tokens/s": tps, "trained tokens/s": sum(real[skip:]) / sum(seconds[skip:]),
           "s/step": sum(seconds[skip:]) / len(seconds[skip:])}
    if device.type == "cuda":
        row["peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK.items() if k in gpu), None)
        row["MFU"] = 6 * model.num_parameters() * tps / peak if peak else float("nan")
    del model
    return row


def loss_falls_and_reloads_on_cpu(device: torch.device, seq: int) -> str:
    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=2048, **CONFIGS["tiny"] if device.type == "cpu" else
                         {**CONFIGS["smollm2-360m"], "num_hidden_layers": 4})
    model = LlamaForCausalLM(config).to(device)
    batches = packed_batches(config.vocab_size, 4, 30, seq, learnable=True)
    with tempfile.TemporaryDirectory() as out:
        result = train(model, batches, TrainConfig(output_dir=out, max_steps=30, learning_rate=1e-3, progress=False))
        ckpt = sorted(p for p in os.scandir(out) if p.name.startswith("checkpoint-"))[-1].path
        cpu_model = LlamaForCausalLM(config)
        load_weights(ckpt, cpu_model)
    x = batches[0]["input_ids"][:1, :64]
    with torch.no_grad():
        on_cpu = cpu_model(input_ids=x).logits
        on_dev = model.eval().float()(input_ids=x.to(device)).logits.cpu()
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    same = torch.allclose(on_cpu, on_dev, atol=2e-2, rtol=1e-2)
    return f"loss {first:.2f} -> {last:.2f} in 30 steps; checkpoint reloads on CPU with matching logits: {same}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="CPU smoke run of the same code path")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    seq = 128 if args.tiny else 1024
    plan = [("tiny", 2)] if args.tiny else [("smollm2-360m", 16), ("llama-3.2-1b", 8)]
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    for name, rows in plan:
        for compile in (False, True):
            t = time.perf_counter()
            row = bench(name, rows, args.steps, seq, compile, device)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
    print(loss_falls_and_reloads_on_cpu(device, seq))


if __name__ == "__main__":
    main()
