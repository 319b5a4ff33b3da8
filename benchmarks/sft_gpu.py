"""GPU run: ftlib's SFT loop in bf16 at seq 1024 — packed rows vs the article's pad-to-1024 rows.

    python -m benchmarks.sft_gpu                      # on a CUDA machine (about 5 minutes on one H100/H200)
    python -m benchmarks.sft_gpu --tiny               # a seconds-long CPU smoke run of the same code path
    python -m benchmarks.sft_gpu --json out.json      # also write the rows as JSON

Needs torch + transformers only (no `datasets`, no hub): models are built from configs with random weights
(throughput does not depend on the weights) and the data are synthetic samples with Alpaca-like lengths
(60-760 tokens), batched two ways with ftlib's collators:

* ``packed``: samples packed into rows of 1024 tokens (block-causal 4D mask), what ftlib does;
* ``article``: one sample per row, right-padded to 1024 tokens, what the source article does.

Both run the same ``ftlib.train.train`` (bf16 autocast, fp32 master weights, AdamW, clipping, cosine schedule).
MFU = 6 x N x tokens/s / peak, with N the parameter count (the PaLM convention without the attention term, so it
slightly understates the work done), counted two ways: over every position the GPU computes (``MFU``) and over real
(non-pad) tokens only (``useful MFU``; equal for packed rows). Peak: the card's dense bf16 figure (989 TFLOP/s for
H100/H200 SXM).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlib.batching import PackingCollator, PaddingCollator, pack_groups
from ftlib.checkpoint import load_weights
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


LENGTHS: list[list[int]] = []  # (sample length, prompt length) pairs of a real dataset, from --lengths
ALL_TRAINED = [False]  # --all-trained: no prompt tokens, so the LM head runs at every position (honest 6N MFU)


def synthetic_samples(vocab: int, n_tokens: int, seq: int, seed: int = 0, learnable: bool = False) -> list[dict]:
    """Random-token samples until ``n_tokens`` are made. Lengths and prompt lengths are drawn from ``LENGTHS`` (the
    Alpaca demo's, tokenised) when given, else uniform in 60-760 with the first quarter as prompt (-100)."""
    g = torch.Generator().manual_seed(seed)
    samples, total = [], 0
    while total < n_tokens:
        n = int(torch.randint(60, min(760, seq), (1,), generator=g))
        prompt = n // 4
        if LENGTHS:
            n, prompt = LENGTHS[int(torch.randint(0, len(LENGTHS), (1,), generator=g))]
        if learnable:  # a repeating pattern: a real model can learn it, so the loss must fall
            start = int(torch.randint(0, vocab - 16, (1,), generator=g))
            ids = [start + (i % 16) for i in range(n)]
        else:
            ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        prompt = 0 if ALL_TRAINED[0] else prompt
        samples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
        total += n
    return samples


def packed_batches(vocab: int, rows: int, steps: int, seq: int, seed: int = 0, learnable: bool = False,
                   attention: str = "mask"):
    """``steps`` batches of ``rows`` rows, each row several samples packed into ``seq`` tokens."""
    samples = synthetic_samples(vocab, int(rows * steps * seq * 1.05), seq, seed, learnable)
    groups = pack_groups([len(s["input_ids"]) for s in samples], seq)
    # "mask": fp32 4D block-causal mask (sdpa accepts it with bf16 queries); "position_ids": HF infers the blocks
    collate = PackingCollator(pad_token_id=0, max_length=seq, attention=attention)
    rows_all = [[samples[i] for i in grp] for grp in groups]
    return [collate(rows_all[k * rows:(k + 1) * rows]) for k in range(steps)]


def article_batches(vocab: int, rows: int, steps: int, seq: int, seed: int = 0):
    """The article's layout: one sample per row, right-padded to ``seq`` (pads masked out of the loss)."""
    samples = synthetic_samples(vocab, rows * steps * 800, seq, seed)[:rows * steps]
    collate = PaddingCollator(pad_token_id=0, pad_to=seq)
    return [collate(samples[k * rows:(k + 1) * rows]) for k in range(steps)]


def bench(name: str, rows: int, steps: int, seq: int, compile: bool, device: torch.device,
          layout: str = "packed") -> dict:
    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=max(seq, 2048), **CONFIGS[name])
    with torch.device(device):  # initialise on the GPU: a 1B model's CPU init takes longer than the run
        model = LlamaForCausalLM(config)
    if layout == "article":
        batches = article_batches(config.vocab_size, rows, steps, seq)
    else:  # "packed" or "packed-posids"
        attention = "position_ids" if layout == "packed-posids" else "mask"
        batches = packed_batches(config.vocab_size, rows, steps, seq, attention=attention)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(output_dir=out, max_steps=steps, learning_rate=1e-4, compile=compile, progress=False,
                          save_final=False)
        result = train(model, batches, cfg)
    skip = 3 if steps > 4 else 1  # warm-up (and compilation) steps
    seconds = sum(r["seconds"] for r in result.history[skip:])
    real = sum(int((b["input_ids"] != 0).sum()) for b in batches[skip:])  # tokens that are not padding
    positions = sum(b["input_ids"].numel() for b in batches[skip:])  # every position the GPU computes
    n = model.num_parameters()
    row = {"model": name, "params_M": n / 1e6, "layout": layout, "compile": compile, "rows x seq": f"{rows}x{seq}",
           "s/step": seconds / (len(batches) - skip), "tokens/s": positions / seconds,
           "real tokens/s": real / seconds, "real fraction": real / positions,
           "loss first/last": f"{result.history[0]['loss']:.3f}/{result.history[-1]['loss']:.3f}"}
    if device.type == "cuda":
        row["peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK.items() if k in gpu), None)
        row["MFU"] = 6 * n * row["tokens/s"] / peak if peak else float("nan")
        row["useful MFU"] = 6 * n * row["real tokens/s"] / peak if peak else float("nan")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
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


PLANS = {  # (model, rows, layout, compile)
    "full": [("llama-3.2-1b", 8, "packed", False), ("llama-3.2-1b", 8, "article", False),
             ("llama-3.2-1b", 8, "packed", True),
             ("smollm2-360m", 16, "packed", False), ("smollm2-360m", 16, "article", False),
             ("llama-3.2-1b", 16, "packed", True), ("smollm2-360m", 16, "packed", True)],
    "alpaca": [("llama-3.2-1b", 8, "packed", False), ("llama-3.2-1b", 8, "article", False),
               ("llama-3.2-1b", 8, "packed-posids", False), ("llama-3.2-1b", 16, "packed-posids", True),
               ("smollm2-360m", 16, "packed", False), ("smollm2-360m", 16, "article", False)],
    "mfu": [("llama-3.2-1b", 24, "packed-posids", True), ("llama-3.2-1b", 32, "packed-posids", True)],
    "tiny": [("tiny", 2, "packed", False), ("tiny", 2, "article", False), ("tiny", 2, "packed", True)],
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="CPU smoke run of the same code path")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--json", help="write the result rows to this file as they come")
    p.add_argument("--plan", choices=list(PLANS), help="default: full (tiny with --tiny)")
    p.add_argument("--lengths", help="JSON list of [length, prompt length] pairs to draw sample lengths from")
    p.add_argument("--all-trained", action="store_true", help="train every token (the LM head runs everywhere)")
    p.add_argument("--budget", type=float, default=480, help="seconds: skip the remaining runs after this")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    seq = 128 if args.tiny else 1024
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    rows_out, start = [], time.perf_counter()
    ALL_TRAINED[0] = args.all_trained
    if args.lengths:
        LENGTHS.extend(json.load(open(args.lengths)))
    for name, rows, layout, compile in PLANS[args.plan or ("tiny" if args.tiny else "full")]:
        if time.perf_counter() - start > args.budget:
            print(f"skipped {name} {layout} compile={compile}: over the {args.budget:.0f} s budget")
            continue
        t = time.perf_counter()
        try:
            row = bench(name, rows, args.steps, seq, compile, device, layout)
        except Exception as e:  # one failing configuration must not lose the others' figures
            row = {"model": name, "layout": layout, "compile": compile, "error": f"{type(e).__name__}: {e}"[:300]}
        row["wall s"] = time.perf_counter() - t
        rows_out.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows_out, f, indent=1)
    for name in {r["model"] for r in rows_out}:  # packed vs article, same model and compile setting
        pair = {r["layout"]: r for r in rows_out if r["model"] == name and not r["compile"] and "error" not in r}
        if "packed" in pair and "article" in pair:
            print(f"{name}: packed / article real tokens/s = "
                  f"{pair['packed']['real tokens/s'] / pair['article']['real tokens/s']:.2f}x")
    if not args.plan or args.plan in ("full", "tiny"):
        print(loss_falls_and_reloads_on_cpu(device, seq))


if __name__ == "__main__":
    main()
