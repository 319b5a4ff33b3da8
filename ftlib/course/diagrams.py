"""Diagrams of the three ideas learners misread, drawn from real runs so a picture cannot drift from the code.

* :func:`kv_cache_figure`: which positions each decoding step computes and which it reads from the KV cache,
  from :func:`forward_token_counts` (tokens actually fed to the model, counted by a hook on real runs of the
  article's loop and of ``ftlib.generate``);
* :func:`labels_figure`: one padded sample as the collator builds it, each token coloured prompt / response /
  EOS / pad, from its real ``labels`` and ``attention_mask``;
* :func:`packing_figure`: the 4D block-causal mask of ``ftlib.batching``'s packed collator, beside the row it
  packs;
* :func:`lora_figure`: one LoRA layer of a real model, its frozen weight W beside the trained A and B, drawn to
  scale from the layer's own tensors (``lora_shapes``).

Each figure's image data *is* the underlying array (class numbers, mask), so tests compare them directly.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftlib.schema import IGNORE_INDEX

# ---------------------------------------------------------------- (a) the KV cache
FUTURE, COMPUTED, CACHED = 0, 1, 2
STEP_COLOURS = ["#f4f4f4", "#d9534f", "#5b9bd5"]  # not yet written, computed this step, read from the cache


def forward_token_counts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                         new_tokens: int) -> dict[str, list[int]]:
    """Tokens fed to ``model`` in each forward pass while making ``new_tokens`` tokens, for both loops.

    Counted by a forward pre-hook during real runs of ``article_generate`` (no cache) and ``generate`` (KV
    cache), with stop tokens off so both make exactly ``new_tokens`` tokens.
    """
    from ftlib.course.article import article_generate
    from ftlib.generation import generate

    fed: list[int] = []

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed.append(int(ids.shape[1]))

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        article_generate(model, tokenizer, prompt, max_tokens=new_tokens, seed=0, stop_token_ids=[])
        article, fed[:] = list(fed), []
        generate(model, tokenizer, prompt, max_new_tokens=new_tokens, seed=0, stop_token_ids=[])
        cached = list(fed)
    finally:
        handle.remove()
    return {"article loop (no cache)": article, "KV cache (ftlib.generate)": cached}


def step_grid(counts: Sequence[int]) -> torch.Tensor:
    """``(steps, positions)`` grid of FUTURE / COMPUTED / CACHED: at step ``i`` the sequence holds
    ``counts[0] + i`` tokens (the prompt, plus one per earlier step); the last ``counts[i]`` are computed, the
    ones before them come from the cache."""
    prompt = counts[0]
    grid = torch.full((len(counts), prompt + len(counts) - 1), FUTURE, dtype=torch.long)
    for i, n in enumerate(counts):
        length = prompt + i
        grid[i, : length - n] = CACHED
        grid[i, length - n: length] = COMPUTED
    return grid


def kv_cache_figure(counts: dict[str, list[int]]):
    """One panel per loop: rows are decoding steps, columns token positions, coloured by :func:`step_grid`."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(counts), figsize=(6 * len(counts), 3.6), sharey=True)
    for ax, (name, fed) in zip(axes, counts.items()):
        ax.imshow(step_grid(fed).numpy(), cmap=ListedColormap(STEP_COLOURS), vmin=0, vmax=2, aspect="auto",
                  interpolation="nearest")
        ax.set_title(f"{name}\n{len(fed)} forward passes, {sum(fed)} token positions computed", fontsize=10)
        ax.set_xlabel(f"token position (prompt: 0-{fed[0] - 1})")
        ax.axvline(fed[0] - 0.5, color="black", linewidth=0.8)
    axes[0].set_ylabel("decoding step (one new token each)")
    fig.legend(handles=[Patch(color=STEP_COLOURS[COMPUTED], label="computed this step"),
                        Patch(color=STEP_COLOURS[CACHED], label="keys/values read from the cache"),
                        Patch(color=STEP_COLOURS[FUTURE], label="not generated yet")],
               loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ---------------------------------------------------------------- (b) label masking
PROMPT, RESPONSE, EOS, PAD = 0, 1, 2, 3
LABEL_CLASSES = ("prompt: label -100", "response: trained", "EOS: trained", "padding: label -100")
LABEL_COLOURS = ["#d9d9d9", "#8fd18a", "#2e8b57", "#f6e3a1"]


def label_classes(input_ids: Sequence[int], labels: Sequence[int], attention_mask: Sequence[int],
                  eos_token_id: int) -> list[int]:
    """PROMPT / RESPONSE / EOS / PAD for each position of a padded row: padding is found by the attention mask
    (by position), never by token id, since the pad id may equal the EOS id."""
    classes = []
    for token, label, real in zip(input_ids, labels, attention_mask):
        if not real:
            classes.append(PAD)
        elif label == IGNORE_INDEX:
            classes.append(PROMPT)
        else:
            classes.append(EOS if token == eos_token_id else RESPONSE)
    return classes


def labels_figure(batch: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerBase, row: int = 0):
    """Row ``row`` of a padded batch (``PaddingCollator`` output) as coloured token boxes."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ids = batch["input_ids"][row].tolist()
    classes = label_classes(ids, batch["labels"][row].tolist(), batch["attention_mask"][row].tolist(),
                            tokenizer.eos_token_id)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.24 * len(ids) + 0.5), 3.0))
    ax.imshow([classes], cmap=ListedColormap(LABEL_COLOURS), vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(ids)), [repr(tokenizer.decode([t]))[1:-1] for t in ids], rotation=90, fontsize=8,
                  family="monospace")
    ax.set_xticks([x - 0.5 for x in range(1, len(ids))], minor=True)
    ax.grid(which="minor", axis="x", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_yticks([])
    trained = classes.count(RESPONSE) + classes.count(EOS)
    fig.suptitle(f"one padded row: {trained} of {len(ids)} tokens trained", fontsize=10, y=0.97)
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(LABEL_COLOURS, LABEL_CLASSES)],
               loc="upper center", bbox_to_anchor=(0.5, 0.9), ncol=4, fontsize=9, frameon=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.72, bottom=0.42)
    return fig


# ---------------------------------------------------------------- (c) packing
def packed_segments(position_ids: Sequence[int], n_real: int) -> list[int]:
    """Sample number of each position of a packed row (positions restart at 0 per sample); -1 for padding."""
    segments, k = [], -1
    for i, p in enumerate(position_ids):
        k += p == 0
        segments.append(k if i < n_real else -1)
    return segments


def packing_figure(batch: dict[str, torch.Tensor], n_real: int, row: int = 0):
    """Row ``row`` of a packed batch (``PackingCollator`` output with ``attention="mask"``): a strip of which
    sample each position belongs to, beside the attention mask (white = may attend, query rows x key columns).
    ``n_real``: tokens of real samples in that row (the rest is padding)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    allowed = (batch["attention_mask"][row, 0] == 0).long().numpy()
    segments = packed_segments(batch["position_ids"][row].tolist(), n_real)
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    strip = [[s] for s in segments]
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.2, 5.2), gridspec_kw={"width_ratios": [1, 12]})
    left.imshow([[s % len(palette) + 1 if s >= 0 else 0] for (s,) in strip], aspect="auto", interpolation="nearest",
                cmap=ListedColormap(["#eeeeee", *palette]), vmin=0, vmax=len(palette))
    left.set_xticks([])
    left.set_ylabel("position in the packed row (grey: padding)")
    starts = [i for i, s in enumerate(segments) if s >= 0 and (i == 0 or segments[i - 1] != s)]
    for k, i in enumerate(starts):
        end = segments.index(k) + segments.count(k)
        left.text(0, (i + end - 1) / 2, f"sample {k}", rotation=90, ha="center", va="center", fontsize=8,
                  color="white")
    right.imshow(allowed, cmap=ListedColormap(["#303030", "#ffffff"]), vmin=0, vmax=1, interpolation="nearest")
    right.set_yticks([])
    right.set_xlabel("key position (attended to)")
    right.set_title(f"block-causal attention mask, {len(starts)} samples in {len(segments)} positions", fontsize=10)
    for i in starts[1:]:
        right.axhline(i - 0.5, color="tab:red", linewidth=0.6)
        right.axvline(i - 0.5, color="tab:red", linewidth=0.6)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- (d) LoRA
def lora_shapes(layer) -> dict[str, tuple[int, int]]:
    """``{"W": (d_out, d_in), "A": (r, d_in), "B": (d_out, r)}`` of a peft LoRA layer, read from its tensors."""
    name = next(iter(layer.lora_A))  # the active adapter
    return {"W": tuple(layer.base_layer.weight.shape), "A": tuple(layer.lora_A[name].weight.shape),
            "B": tuple(layer.lora_B[name].weight.shape)}


def lora_figure(layer, title: str = "one LoRA layer"):
    """W (frozen, grey) + B @ A (trained, green), each a rectangle of its real shape: the picture of LoRA's
    parameter count. ``layer``: a peft ``lora.Linear`` (e.g. ``model.base_model.model.model.layers[0]...``)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    shapes = lora_shapes(layer)
    (d_out, d_in), (r, _) = shapes["W"], shapes["A"]
    gap = max(d_in, d_out) * 0.12
    fig, ax = plt.subplots(figsize=(8, 3.4))
    boxes = {"W": (0, 0, d_in, d_out, "#bdbdbd"),  # x, y, width (columns), height (rows), colour
             "B": (d_in + 2 * gap, 0, r, d_out, "#55a868"),
             "A": (d_in + 3 * gap + r, d_out - r, d_in, r, "#55a868")}
    for key, (x, y, w, h, colour) in boxes.items():
        ax.add_patch(Rectangle((x, y), w, h, facecolor=colour, edgecolor="black", linewidth=0.8))
        rows, cols = shapes[key]
        state = "frozen" if key == "W" else "trained"
        ax.text(x + w / 2, y - gap * 0.35, f"{key}: {rows} x {cols}\n{rows * cols:,} {state}", ha="center",
                va="top", fontsize=9)
    ax.text(d_in + gap, d_out / 2, "+", fontsize=20, ha="center", va="center")
    ax.text(d_in + 2.5 * gap + r, d_out - r / 2, "@", fontsize=14, ha="center", va="center")
    ax.set_xlim(-gap * 0.2, d_in * 2 + 3.2 * gap + r)
    ax.set_ylim(-gap * 1.6, d_out + gap * 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    trained = r * (d_in + d_out)
    ax.set_title(f"{title}: W + (alpha/r) B @ A, r = {r}; trained {trained:,} of {d_out * d_in + trained:,} "
                 f"({trained / (d_out * d_in):.1%} of W)", fontsize=10)
    fig.tight_layout()
    return fig
