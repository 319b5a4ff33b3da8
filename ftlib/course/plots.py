"""Plots learners would rather look at than read: loss curves, DPO rewards, reply lengths, stop rates, short-answer
scores, and token
probabilities before and after a sampling step. Each draws on ``ax``/``axes`` if given and returns it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

    from ftlib.evaluate import GenerationReport


def running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    return [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
            for i in range(len(values))]


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` written by :func:`ftlib.train.train` (directory or file path)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(history: list[dict] | str | Path, ax=None, label: str = "train", smooth: int = 1):
    """Training loss per step (optionally a running mean over ``smooth`` steps) and eval loss where logged."""
    import matplotlib.pyplot as plt

    rows = read_metrics(history) if isinstance(history, (str, Path)) else history
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    if smooth > 1:
        losses = running_mean(losses, smooth)
    ax.plot(steps, losses, label=f"{label} loss" + (f" (mean of {smooth})" if smooth > 1 else ""))
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if evals:
        ax.plot(*zip(*evals), "o--", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trained token")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_dpo(history: list[dict], axes=None):
    """Loss, reward margin and reward accuracy per step (held-out values as points where logged)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    steps = [r["step"] for r in history]
    for ax, key, title in zip(axes, ("loss", "margin", "accuracy"), ("DPO loss", "reward margin", "reward accuracy")):
        ax.plot(steps, [r[key] for r in history], label="train batch", alpha=0.5)
        window = 5
        ax.plot(steps, running_mean([r[key] for r in history], window), label=f"mean of {window}")
        evals = [(r["step"], r[f"eval_{key}"]) for r in history if f"eval_{key}" in r]
        if evals:
            ax.plot(*zip(*evals), "o", label="held-out")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return axes


def plot_lengths(reports: dict[str, GenerationReport], ax=None, bins: int = 16):
    """Histogram of reply lengths per model; the dashed line is the length limit (replies there never stopped)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    limit = max(r.max_new_tokens for r in reports.values())
    import numpy as np

    edges = np.linspace(0, limit + 1, bins + 1)
    ax.hist([r.lengths for r in reports.values()], bins=edges,  # side-by-side bars, one colour per model
            label=[f"{name} (stop rate {r.stop_rate:.0%})" for name, r in reports.items()])
    ax.axvline(limit, color="k", ls="--", lw=1)
    ax.set_xlabel("reply length (tokens)")
    ax.set_ylabel("replies")
    ax.legend()
    return ax


def plot_stop_rates(rates: dict[str, float], ax=None):
    """Bar chart of stop rates (0 to 1)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    bars = ax.bar(list(rates), list(rates.values()), color=[f"C{i}" for i in range(len(rates))])  # as plot_lengths
    for bar, value in zip(bars, rates.values()):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.02, f"{value:.0%}", ha="center")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("stop rate")
    return ax


def plot_scores(scores: dict[str, dict], axes=None):
    """Short-answer results side by side (``ftlib.short_answers`` scores per model): right answers out of n on the
    left, stop rate and repeating replies on the right, one colour per model."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    names = list(scores)
    colours = [f"C{i}" for i in range(len(names))]
    right = [s["right"] / s["n"] for s in scores.values()]
    bars = axes[0].barh(names, right, color=colours)
    for bar, s in zip(bars, scores.values()):
        axes[0].text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{s['right']}/{s['n']}",
                     va="center")
    axes[0].set_xlim(0, 1.15)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("right answers (share of the questions)")
    x = range(len(names))
    width = 0.4
    from matplotlib.patches import Patch

    axes[1].bar([i - width / 2 for i in x], [s["stop_rate"] for s in scores.values()], width, color=colours)
    axes[1].bar([i + width / 2 for i in x], [s["repetition_rate"] for s in scores.values()], width, color=colours,
                alpha=0.4, hatch="//")
    axes[1].set_xticks(list(x), names, rotation=20, ha="right", fontsize=8)
    axes[1].set_ylabel("share of the replies")
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(handles=[Patch(facecolor="grey", label="stop rate"),
                            Patch(facecolor="grey", alpha=0.4, hatch="//", label="repeating replies")], fontsize=8)
    return axes


def plot_before_after(before: Tensor, after: Tensor, tokenizer, k: int = 12, ax=None, title: str = ""):
    """Grouped bars: probabilities of the ``k`` most likely tokens *before* a step, and after it.

    Filtered tokens drop to zero and the survivors grow, because the softmax renormalises what is left.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(8, 3))[1]
    p_before, p_after = before.float().reshape(-1).softmax(-1), after.float().reshape(-1).softmax(-1)
    ids = p_before.topk(k).indices
    x = np.arange(k)
    ax.bar(x - 0.2, p_before[ids].numpy(), width=0.4, label="before")
    ax.bar(x + 0.2, p_after[ids].numpy(), width=0.4, label="after")
    ax.set_xticks(x, [repr(tokenizer.decode([i]))[1:-1] for i in ids.tolist()], rotation=45, ha="right")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend()
    return ax
