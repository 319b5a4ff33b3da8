"""Generation speed: the article's no-cache loop vs ``model.generate`` vs ``ftlib.generate``, one process.

    python -m benchmarks.generation [--lengths 50 200 500] [--article-max 200] [--repeats 2] [--threads N]
                                    [--dtypes fp32 bf16]

Same model (the profile's instruct model), same prompt, the article's sampling settings (temperature 0.9,
top-k 50, repetition penalty 1.1) and exactly N new tokens for everyone (end-of-sequence is disabled:
``min_new_tokens`` for HF, ``stop_token_ids=[]`` for ftlib and the article loop). The KV-cached methods are timed
in every dtype of ``--dtypes`` (default fp32, plus bf16 where the hardware runs it natively), the article loop in
fp32. The article loop re-reads the whole sequence every step, so its cost grows with the square of the length:
lengths above ``--article-max`` are skipped for it. Prints tokens/s and ratios against the baselines run here.

Roofline: decoding one token at batch 1 reads every weight once, so no method can beat
``memory read bandwidth / bytes of weights read per token``. The bandwidth is measured here, on the same thread
count (best of several ``sum`` passes over a 1 GiB fp32 tensor, far larger than the caches); the bytes are the
model's distinct weights in that dtype, the input embedding counted as one row unless it is the (tied) LM head.
Each method's tokens/s is also printed as a fraction of that roofline (the KV cache, < 5 % of the weights' bytes
at these lengths, is left out). Before timing, greedy decoding by ftlib and by HF ``generate`` is checked to give
the same tokens in every dtype.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ftlib.course.article import article_generate
from ftlib.device import cpu_has_native_bf16, pick_device
from ftlib.generation import generate
from ftlib.models import load_model
from ftlib.profiles import get_profile

PROMPT = "Once upon a time, there was"
SETTINGS = dict(temperature=0.9, top_k=50)
PENALTY, PENALTY_RANGE = 1.1, 10
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def memory_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: the best of ``repeats`` sums over a ``gib`` GiB fp32 tensor (torch's threads)."""
    x = torch.ones(int(gib * 2 ** 30) // 4, dtype=torch.float32, device=device)
    x.sum()  # first touch / page faults out of the timing
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        x.sum()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return x.numel() * x.element_size() / best


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: every distinct parameter once, except an input embedding that is
    not the LM head (a lookup reads one row of it)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or emb.weight.data_ptr() != head.weight.data_ptr():
        total -= (emb.weight.shape[0] - 1) * emb.weight.shape[1] * emb.weight.element_size()
    return total


def greedy_matches_hf(model, tok, n: int = 32) -> bool:
    """ftlib's greedy tokens equal HF generate's on the benchmark prompt (same model, same dtype)."""
    inputs = tok(PROMPT, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    ours = generate(model, tok, PROMPT, max_new_tokens=n, do_sample=False, stop_token_ids=[], return_details=True)
    return ours.token_ids == out[0, inputs.input_ids.shape[1]:].tolist()


def run_article(model, tok, n: int) -> int:
    text = article_generate(model, tok, PROMPT, max_tokens=n, repetition_penalty=PENALTY,
                            repetition_penalty_range=PENALTY_RANGE, seed=0, stop_token_ids=[], **SETTINGS)
    return n if text is not None else 0


def run_hf(model, tok, n: int) -> int:
    inputs = tok(PROMPT, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                             repetition_penalty=PENALTY, pad_token_id=tok.pad_token_id, **SETTINGS)
    return out.shape[1] - inputs.input_ids.shape[1]


def run_ftlib(model, tok, n: int) -> int:
    out = generate(model, tok, PROMPT, max_new_tokens=n, repetition_penalty=PENALTY,
                   repetition_penalty_range=PENALTY_RANGE, seed=0, stop_token_ids=[], return_details=True,
                   **SETTINGS)
    return len(out.token_ids)


def tokens_per_second(fn, model, tok, n: int, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        produced = fn(model, tok, n)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        assert produced == n, f"{fn.__name__} produced {produced} tokens, expected {n}"
    return n / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--article-max", type=int, default=200, help="skip the article loop above this length")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many interleaved runs (KV-cached)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None,
                        help="KV-cached methods' dtypes (default: fp32, plus bf16 on CUDA or a native-bf16 CPU)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    profile, device = get_profile(), pick_device()
    native = device.type == "cuda" or cpu_has_native_bf16()
    dtypes = [DTYPES[d] for d in (args.dtypes or (["fp32", "bf16"] if native else ["fp32"]))]
    if torch.float32 not in dtypes:
        dtypes.insert(0, torch.float32)  # the article loop's dtype and the ratios' baseline
    models = {dtype: load_model("instruct", profile, dtype=dtype, device=device) for dtype in dtypes}
    name = lambda dtype: str(dtype).replace("torch.", "").replace("float32", "fp32").replace("bfloat16", "bf16")  # noqa: E731
    bandwidth = memory_bandwidth(device)
    weight_bytes = {name(d): weight_bytes_per_token(m) for d, (m, _) in models.items()}
    roofline = {d: bandwidth / b for d, b in weight_bytes.items()}
    print(f"model {profile.models['instruct']} on {device}, {torch.get_num_threads()} threads, native bf16: {native}")
    print(f"memory read bandwidth {bandwidth / 1e9:.1f} GB/s (sum over a 1 GiB fp32 tensor, best of 5); weights read "
          "per token: " + ", ".join(f"{d} {b / 1e6:.0f} MB -> roofline {roofline[d]:.1f} tok/s"
                                    for d, b in weight_bytes.items()))
    for dtype, (model, tok) in models.items():
        print(f"greedy, 32 tokens: ftlib == HF generate ({name(dtype)}): {greedy_matches_hf(model, tok)}", flush=True)

    for model, tok in models.values():  # warm-up: first calls pay one-off allocation costs
        run_hf(model, tok, 4), run_ftlib(model, tok, 4)

    rows = []
    for n in args.lengths:
        result = {"n": n}
        if n <= args.article_max:  # once: it is by far the slowest, and its noise is small relative to its gap
            result["article fp32"] = tokens_per_second(run_article, *models[torch.float32], n, 1)
        for _ in range(args.repeats):  # interleaved rounds, best of each: fair under a noisy, shared CPU
            for dtype, (model, tok) in models.items():
                for label, fn in [(f"HF generate {name(dtype)}", run_hf), (f"ftlib {name(dtype)}", run_ftlib)]:
                    result[label] = max(result.get(label, 0.0), tokens_per_second(fn, model, tok, n, 1))
        rows.append(result)
        print(" ".join(f"{k}={v:.1f}" for k, v in result.items() if k != "n"), f"(n={n})", flush=True)

    columns = [c for c in rows[0] if c != "n"] + [c for r in rows for c in r if c not in rows[0]]
    columns = list(dict.fromkeys(columns))
    print("\ntokens/s")
    print(f"| new tokens | {' | '.join(columns)} |")
    print(f"|---:|{'---:|' * len(columns)}")
    for r in rows:
        print(f"| {r['n']} | " + " | ".join(f"{r[c]:.1f}" if c in r else "-" for c in columns) + " |")

    print(f"\nfraction of the memory roofline ({bandwidth / 1e9:.1f} GB/s / weight bytes per token: "
          + ", ".join(f"{d} {roofline[d]:.1f} tok/s" for d in roofline) + ")")
    print(f"| new tokens | {' | '.join(columns)} |")
    print(f"|---:|{'---:|' * len(columns)}")
    for r in rows:
        print(f"| {r['n']} | " + " | ".join(f"{r[c] / roofline[c.split()[-1]]:.0%}" if c in r else "-"
                                            for c in columns) + " |")

    print("\nratios")
    fast = dtypes[-1]
    print("| new tokens | " + " | ".join(f"ftlib / HF ({name(d)})" for d in models)
          + f" | ftlib {name(fast)} / article fp32 |")
    print(f"|---:|{'---:|' * (len(models) + 1)}")
    for r in rows:
        same = [f"{r[f'ftlib {name(d)}'] / r[f'HF generate {name(d)}']:.2f}x" for d in models]
        art = f"{r[f'ftlib {name(fast)}'] / r['article fp32']:.1f}x" if "article fp32" in r else "-"
        print(f"| {r['n']} | " + " | ".join(same) + f" | {art} |")
    if device.type == "cpu" and torch.bfloat16 in models:
        print("\n" + cpu_dtype_advice(rows))


def cpu_dtype_advice(rows: list[dict], margin: float = 1.1) -> str:
    """The evidence ``ftlib.device.generation_dtype`` asks for: bf16 only where it decoded faster than fp32 at every
    length (by ``margin``, above run-to-run noise); otherwise the fp32 default stands."""
    gain = min(r["ftlib bf16"] / r["ftlib fp32"] for r in rows)
    if gain >= margin:
        return (f"CPU generation dtype: bf16 decoded {gain:.2f}x fp32's speed or more here: set "
                f"FTLIB_CPU_GENERATION_DTYPE=bf16 (or auto) to use it; fp32 stays the default")
    return f"CPU generation dtype: bf16 gained at most {gain:.2f}x here (< {margin}x): keep the fp32 default"


if __name__ == "__main__":
    main()
