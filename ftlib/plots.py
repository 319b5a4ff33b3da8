"""Plots learners would rather look at than read: loss curves from a training run's metrics."""
from __future__ import annotations

import json
from pathlib import Path


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
        losses = [sum(losses[max(0, i - smooth + 1): i + 1]) / len(losses[max(0, i - smooth + 1): i + 1])
                  for i in range(len(losses))]
    ax.plot(steps, losses, label=f"{label} loss" + (f" (mean of {smooth})" if smooth > 1 else ""))
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if evals:
        ax.plot(*zip(*evals), "o--", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trained token")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
