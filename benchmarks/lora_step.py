"""One LoRA training step of notebook 05's model on a CPU: seconds, where they go, and how close to the matmul peak.

    python -m benchmarks.lora_step [--variants fp32 bf16-autocast bf16-cast] [--steps 3] [--warmup 2] [--profile]

The shape of issue 25: Gemma-3-270M base, LoRA r=16 (alpha 32) on every attention and MLP projection, 4 rows x 256
tokens of Alpaca text, the second half of each row trained, ftlib's trained-rows loss, AdamW; ``ftlib.train.train``
itself runs the steps (so the figure is the real loop's), the same batch every step, and the mean of ``--steps``
steps after ``--warmup`` is reported. Variants, each on a freshly loaded model with the same adapters:

* ``fp32``: no autocast;
* ``bf16-autocast``: bf16 autocast over fp32 weights, every frozen weight recast in every matmul (before issue 25);
* ``bf16-cast``: the same autocast, frozen linear weights held in bf16, cast once (``ftlib.frozen``; the default);
* ``bf16-cast-compile``: that plus ``TrainConfig(compile=True)`` (torch.compile, inductor on the CPU).

Also printed: the step's FLOPs (forward + activation gradients of every linear, the attention products, the LM head
on the trained rows), the machine's measured bf16 and fp32 matmul rate on a 1024x640x2048 product, the fraction of
it each variant reaches, the losses per step (bf16-autocast and bf16-cast must agree: same operands), and with
``--profile`` the top operators of one step (torch.profiler, self CPU time).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ftlib.data import load_instructions  # noqa: E402
from ftlib.lora import add_lora  # noqa: E402
from ftlib.models import load_model, load_tokenizer  # noqa: E402
from ftlib.train import TrainConfig, train  # noqa: E402

VARIANTS = {"fp32": dict(bf16=False, cast_frozen=False), "bf16-autocast": dict(bf16=True, cast_frozen=False),
            "bf16-cast": dict(bf16=True, cast_frozen=True),
            "bf16-cast-compile": dict(bf16=True, cast_frozen=True, compile=True)}


def make_batch(tokenizer, rows: int, length: int) -> dict:
    """``rows`` x ``length`` tokens of Alpaca text, labels on the second half of every row."""
    records = load_instructions("offline").select(range(400))
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in records]
    ids = [t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    input_ids = torch.tensor(ids[: rows * length]).view(rows, length)
    labels = input_ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def matmul_rate(dtype: torch.dtype, m: int = 1024, k: int = 640, n: int = 2048, repeat: int = 20) -> float:
    """FLOP/s of an (m x k) @ (k x n) product in ``dtype``, best of ``repeat``."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best


def step_flops(model, batch: dict) -> float:
    """Forward + activation-gradient FLOPs of the frozen linears and attention, plus the head on trained rows."""
    cfg = model.config
    rows, length = batch["input_ids"].shape
    tokens = rows * length
    linear = sum(2 * m.in_features * m.out_features for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lora_" not in name and "lm_head" not in name)
    heads_dim = cfg.num_attention_heads * cfg.head_dim
    attention = cfg.num_hidden_layers * rows * 2 * 2 * length * length * heads_dim  # QK^T and PV (full square)
    trained = int((batch["labels"][:, 1:] != -100).sum())
    head = 2 * cfg.vocab_size * cfg.hidden_size * trained
    return 2 * (linear * tokens + attention + head)  # forward, then the same again for the activation gradients


def run_variant(name: str, batch: dict, steps: int, warmup: int, profile: bool) -> dict:
    model, _ = load_model("base", "offline")
    torch.manual_seed(0)
    model = add_lora(model, r=16, alpha=32)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(output_dir=out, learning_rate=1e-4, max_steps=warmup + steps, save_final=False,
                          progress=False, **VARIANTS[name])
        started = time.perf_counter()
        history = train(model, [batch] * (warmup + steps), cfg).history
        total = time.perf_counter() - started
        table = None
        if profile:
            cfg = TrainConfig(output_dir=out, learning_rate=1e-4, max_steps=1, save_final=False, progress=False,
                              **VARIANTS[name])
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                train(model, [batch], cfg)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    seconds = [r["seconds"] for r in history[warmup:]]
    return {"name": name, "s_per_step": sum(seconds) / len(seconds), "total": total, "profile": table,
            "first_steps": [r["seconds"] for r in history[:warmup]], "losses": [r["loss"] for r in history],
            "flops": step_flops(model, batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16-autocast", "bf16-cast"], choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    peak = {"bf16": matmul_rate(torch.bfloat16), "fp32": matmul_rate(torch.float32)}
    print(f"matmul 1024x640x2048: bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s")
    batch = make_batch(load_tokenizer("base", "offline"), args.rows, args.length)
    results = []
    for name in args.variants:
        r = run_variant(name, batch, args.steps, args.warmup, args.profile)
        results.append(r)
        rate = r["flops"] / r["s_per_step"]
        ref = peak["fp32" if name == "fp32" else "bf16"]
        print(f"{name:18} {r['s_per_step']:.2f} s/step (warm-up steps {', '.join(f'{s:.1f}' for s in r['first_steps'])}"
              f" s; {r['total']:.0f} s in all)  {r['flops'] / 1e9:.0f} GFLOP/step -> {rate / 1e9:.0f} GFLOP/s = "
              f"{rate / ref:.0%} of the matmul rate; losses {' '.join(f'{x:.4f}' for x in r['losses'])}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if r["profile"]:
            print(r["profile"])
    base = {r["name"]: r for r in results}
    if "bf16-autocast" in base:
        for r in results:
            print(f"{r['name']:18} {base['bf16-autocast']['s_per_step'] / r['s_per_step']:.2f}x bf16-autocast's speed")
    if {"bf16-autocast", "bf16-cast"} <= base.keys():
        gap = max(abs(a - b) for a, b in zip(base["bf16-autocast"]["losses"], base["bf16-cast"]["losses"]))
        print(f"largest loss gap bf16-autocast vs bf16-cast: {gap:.2e}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (whole process)")


if __name__ == "__main__":
    main()
