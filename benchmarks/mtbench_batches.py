"""Notebook 09's MT-Bench generation in other batchings: time, and whether the greedy text changes.

    OMP_NUM_THREADS=1 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python -m benchmarks.mtbench_batches [--model notebooks/outputs/sft-chat-offline/final]

The 80 first turns in the model's chat template, sorted by length as 09 sorts them, at most 32 new tokens, split
into consecutive batches of the given sizes. A bigger batch reads the 262k-token head once for more rows, but pads
every prompt to the batch's longest; the first batching (09's, 16 at a time) is the baseline of the ratios. Prints
seconds, the ratio, and how many of the 80 replies have the same text as the baseline's.
"""
from __future__ import annotations

import argparse
import time

from ftlib.data import load_questions
from ftlib.generation import generate
from ftlib.models import load_model
from ftlib.profiles import get_profile

BATCHINGS = [[16] * 5, [40, 40], [64, 16], [48, 32], [56, 16, 8], [80]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="notebooks/outputs/sft-chat-offline/final")
    parser.add_argument("--profile", default="offline")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    model, tok = load_model(args.model, profile)
    prompts = sorted((tok.apply_chat_template([{"role": "user", "content": q["turns"][0]}], tokenize=False,
                                              add_generation_prompt=True) for q in load_questions(profile)), key=len)
    baseline = None
    for sizes in BATCHINGS:
        started, replies, at = time.perf_counter(), [], 0
        for size in sizes:
            replies += generate(model, tok, prompts[at:at + size], max_new_tokens=32, do_sample=False,
                                add_special_tokens=False, return_details=True)
            at += size
        seconds = time.perf_counter() - started
        baseline = baseline or (seconds, [r.text for r in replies])
        same = sum(a == r.text for a, r in zip(baseline[1], replies))
        print(f"{str(sizes):>20}: {seconds:6.1f} s  {seconds / baseline[0]:4.2f}x  same text as 16 a batch: {same}/80",
              flush=True)


if __name__ == "__main__":
    main()
