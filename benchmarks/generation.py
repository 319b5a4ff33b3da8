"""Generation speed: the article's no-cache loop vs ``model.generate`` vs ``ftlib.generate``, one process.

    python -m benchmarks.generation [--lengths 50 200 500] [--article-max 200] [--repeats 2] [--threads N]

Same model (the profile's instruct model), same prompt, the article's sampling settings (temperature 0.9,
top-k 50, repetition penalty 1.1) and exactly N new tokens for everyone (end-of-sequence is disabled:
``min_new_tokens`` for HF, ``stop_token_ids=[]`` for ftlib and the article loop). Each method is timed at
fp32 and, for the KV-cached ones, at ftlib's generation dtype (bf16 where the hardware has it). The article
loop re-reads the whole sequence every step, so its cost grows with the square of the length: lengths above
``--article-max`` are skipped for it. Prints tokens/s and ratios against the baselines run here.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ftlib.article import article_generate
from ftlib.device import generation_dtype, pick_device
from ftlib.generation import generate
from ftlib.models import load_model
from ftlib.profiles import get_profile

PROMPT = "Once upon a time, there was"
SETTINGS = dict(temperature=0.9, top_k=50)
PENALTY, PENALTY_RANGE = 1.1, 10


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
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    profile, device = get_profile(), pick_device()
    fast = generation_dtype(device)
    models = {torch.float32: load_model("instruct", profile, dtype=torch.float32, device=device)}
    if fast != torch.float32:
        models[fast] = load_model("instruct", profile, dtype=fast, device=device)
    name = lambda dtype: str(dtype).replace("torch.", "")  # noqa: E731
    print(f"model {profile.models['instruct']} on {device}, {torch.get_num_threads()} threads; "
          f"ftlib generation dtype: {name(fast)}")

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
    print("\ntokens/s")
    print(f"| new tokens | {' | '.join(columns)} |")
    print(f"|---:|{'---:|' * len(columns)}")
    for r in rows:
        print(f"| {r['n']} | " + " | ".join(f"{r[c]:.1f}" if c in r else "-" for c in columns) + " |")

    print("\nratios")
    print("| new tokens | " + " | ".join(f"ftlib / HF ({name(d)})" for d in models)
          + f" | ftlib {name(fast)} / article fp32 |")
    print(f"|---:|{'---:|' * (len(models) + 1)}")
    for r in rows:
        same = [f"{r[f'ftlib {name(d)}'] / r[f'HF generate {name(d)}']:.2f}x" for d in models]
        art = f"{r[f'ftlib {name(fast)}'] / r['article fp32']:.1f}x" if "article fp32" in r else "-"
        print(f"| {r['n']} | " + " | ".join(same) + f" | {art} |")


if __name__ == "__main__":
    main()
