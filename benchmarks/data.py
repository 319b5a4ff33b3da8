"""Data pipeline benchmark: padding waste per batching strategy, and tokenisation throughput.

    python -m benchmarks.data [--records 50000]

(a) real-token fraction of one epoch on the offline Alpaca demo (SmolLM2 tokenizer, batch size 4, rows of 1024)
    for the article's pad-to-1024, dynamic padding (random and length-grouped batches) and packing;
(b) records/s tokenising N Alpaca records (the demo repeated): ftlib's batched ``tokenise_dataset`` against the
    article's per-item ``__getitem__`` (our re-implementation, ``FineTuningDataset``), same process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402

from ftlib.course.article import FineTuningDataset  # noqa: E402
from ftlib.course.stats import compare_strategies, length_stats  # noqa: E402
from ftlib.data import load_instructions  # noqa: E402
from ftlib.models import load_tokenizer  # noqa: E402
from ftlib.samples import tokenise_dataset  # noqa: E402
from ftlib.templates import format_alpaca  # noqa: E402


def padding_waste(tokenizer, demo: datasets.Dataset) -> None:
    samples, _ = tokenise_dataset(demo, tokenizer)
    lengths = samples["length"][:]
    article = FineTuningDataset(demo, tokenizer, seq_length=1024)
    # x holds BOS + text; its EOS has the pad id (pad == eos), hence the + 1
    article_lengths = [int((x != tokenizer.pad_token_id).sum()) + 1 for x, _ in (article[i] for i in range(len(demo)))]
    print("(a) real-token fraction, batch 4, rows of 1024 tokens")
    s = length_stats(article_lengths)
    print(f"    article samples: mean {s['mean']:.0f}, median {s['median']:.0f}, max {s['max']} tokens; "
          f"pad-to-1024 real fraction {sum(article_lengths) / (1024 * len(article_lengths)):.3f}")
    s = length_stats(lengths)
    print(f"    ftlib samples:   mean {s['mean']:.0f}, median {s['median']:.0f}, max {s['max']} tokens")
    for name, fraction in compare_strategies(lengths, batch_size=4, max_length=1024).items():
        print(f"    {name:16} {fraction:.3f}")


def throughput(tokenizer, demo: datasets.Dataset, records: int, chunks: int = 5) -> None:
    """Records/s over ``records`` records, in ``chunks`` interleaved rounds so that load from other processes
    hits all three methods alike; the ratio is the median of the per-round ratios."""
    big = datasets.concatenate_datasets([demo] * (records // len(demo) + 1)).select(range(records))
    size = records // chunks
    times: dict[str, list[float]] = {"article": [], "ftlib": [], "tokenizer": []}
    for c in range(chunks):
        part = datasets.Dataset.from_dict(big[c * size:(c + 1) * size])  # in memory, nothing cached between runs
        start = time.perf_counter()
        _, report = tokenise_dataset(part, tokenizer)
        times["ftlib"].append(time.perf_counter() - start)
        assert report.kept == size
        article = FineTuningDataset(part, tokenizer, seq_length=1024)
        start = time.perf_counter()
        for i in range(len(article)):
            article[i]
        times["article"].append(time.perf_counter() - start)
        texts = [p + r for p, r in (format_alpaca(row) for row in part)]
        start = time.perf_counter()
        tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        times["tokenizer"].append(time.perf_counter() - start)
    rate = {k: size * chunks / sum(v) for k, v in times.items()}
    ratio = statistics.median(a / f for a, f in zip(times["article"], times["ftlib"]))
    print(f"(b) tokenising {size * chunks} Alpaca records ({chunks} interleaved rounds)")
    print(f"    article __getitem__      {rate['article']:8.0f} records/s")
    print(f"    ftlib tokenise_dataset   {rate['ftlib']:8.0f} records/s   ratio {ratio:.1f}x (median of rounds)")
    print(f"    Rust tokenizer alone     {rate['tokenizer']:8.0f} records/s   (no labels, no dataset: the ceiling)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    tokenizer = load_tokenizer("instruct")
    demo = load_instructions()
    padding_waste(tokenizer, demo)
    throughput(tokenizer, demo, args.records)


if __name__ == "__main__":
    main()
