"""Statistics about training samples: token lengths, padding waste per batching strategy, truncation counts.

The real-token fraction is computed from lengths alone, by the *same* batching code ``make_dataloader`` uses
(``LengthGroupedBatchSampler``, ``pack_groups``), so the figures describe the batches a training run really gets.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ftlib.batching import LengthGroupedBatchSampler, pack_groups


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Count, mean, median, 90th/99th percentile and max of token lengths."""
    a = np.asarray(lengths)
    return {"count": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": int(a.max())}


def batch_widths(lengths: Sequence[int], strategy: str, batch_size: int, max_length: int | None = None,
                 group_by_length: bool = True, seed: int = 0) -> list[tuple[int, int]]:
    """``(rows, row length)`` of each batch one epoch would produce with ``strategy``."""
    lengths = list(lengths)
    if strategy == "pad":
        sizes = [min(batch_size, len(lengths) - s) for s in range(0, len(lengths), batch_size)]
        return [(n, max_length) for n in sizes]
    if strategy == "dynamic":
        if group_by_length:
            batches = list(LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, seed=seed))
        else:
            order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
            batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        return [(len(b), max(lengths[i] for i in b)) for b in batches]
    if strategy == "packed":
        rows = [sum(lengths[i] for i in group) for group in pack_groups(lengths, max_length)]
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
        rows = [rows[i] for i in order]
        return [(len(rows[s:s + batch_size]), max(rows[s:s + batch_size])) for s in range(0, len(rows), batch_size)]
    raise ValueError(f"unknown strategy {strategy!r}; choose 'pad', 'dynamic' or 'packed'")


def real_token_fraction(lengths: Sequence[int], strategy: str, batch_size: int, max_length: int | None = None,
                        group_by_length: bool = True, seed: int = 0) -> float:
    """Share of the tokens the model processes that are real (not padding) for one epoch with ``strategy``."""
    widths = batch_widths(lengths, strategy, batch_size, max_length, group_by_length, seed)
    return sum(lengths) / sum(rows * width for rows, width in widths)


def compare_strategies(lengths: Sequence[int], batch_size: int, max_length: int, seed: int = 0) -> dict[str, float]:
    """Real-token fraction for pad-to-``max_length``, random dynamic batches, length-grouped ones, and packing."""
    return {
        f"pad-to-{max_length}": real_token_fraction(lengths, "pad", batch_size, max_length),
        "dynamic": real_token_fraction(lengths, "dynamic", batch_size, group_by_length=False, seed=seed),
        "dynamic+grouped": real_token_fraction(lengths, "dynamic", batch_size, seed=seed),
        "packed": real_token_fraction(lengths, "packed", batch_size, max_length, seed=seed),
    }


def overlong_counts(lengths: Sequence[int], limits: Sequence[int] = (256, 512, 1024)) -> dict[int, int]:
    """How many samples each ``max_length`` would have to drop or truncate."""
    a = np.asarray(lengths)
    return {limit: int((a > limit).sum()) for limit in limits}


def trained_fraction(labels: Sequence[Sequence[int]]) -> float:
    """Share of (unpadded) sample tokens that carry a label, i.e. are trained on."""
    total = sum(len(x) for x in labels)
    return sum(sum(1 for t in x if t != -100) for x in labels) / total
