"""What several exercise check modules share, in one copy each: comparisons that name a known mistake, and the
fixed inputs the checks run on (the offline SmolLM2 tokenizer; a tiny random Llama with a 2-row batch).

The "not answered yet" handling lives with the framework, in ``ftlib.course.exercises.core``.
"""
from __future__ import annotations

import functools

import torch

END = 2  # the tiny models' end token (pad == eos, as in the article)


def number(x) -> float | None:
    """A plain float from a number or a one-element tensor; None for anything else."""
    if isinstance(x, torch.Tensor):
        return float(x.detach()) if x.numel() == 1 else None
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return None


def close(a: float, b: float, tol: float = 1e-4) -> bool:
    """``a`` equals ``b`` up to a relative tolerance (absolute below 1): the same verdict on any machine."""
    return abs(a - b) <= tol * max(1.0, abs(b))


def known_mistake(value: float, mistakes: dict[str, float]) -> str | None:
    """The sentence of the first known mistake that gives ``value``."""
    return next((sentence for sentence, wrong in mistakes.items() if close(value, wrong)), None)


def first_diff(got: str, want: str) -> str:
    """Where two rendered prompts first differ, as a sentence (from the start of a special token it falls in)."""
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    j = want.rfind("<|", 0, i + 1)
    i = j if j >= 0 and "|>" not in want[j:i] else i  # start of the special token the difference falls in
    return f"at character {i} yours has {got[i:i + 20]!r} where the template has {want[i:i + 20]!r}"


@functools.lru_cache(maxsize=1)
def smollm2():
    """The offline instruct tokenizer (SmolLM2, ChatML): the same on every machine, whatever the profile."""
    from ftlib.models import load_tokenizer

    return load_tokenizer("instruct", "offline")


@functools.lru_cache(maxsize=1)
def tiny_batch() -> tuple:
    """A tiny random Llama, a 2-row batch (prompt masked, row 1 padded, each reply closed by the end token), logits."""
    from ftlib.tiny import tiny_llama

    with torch.random.fork_rng():  # tiny_llama seeds torch: leave the learner's random state alone
        model = tiny_llama(vocab_size=64)
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    ids[0, 9], ids[1, 7:] = END, END  # row 1: its end token at 7, then padding (pad == eos)
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[1, 8:] = -100  # padding, masked by position
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return model, ids, labels, logits
