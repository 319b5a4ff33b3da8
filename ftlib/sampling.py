"""The logits steps of sampling, one small function each, so a notebook can show them one at a time.

Every function takes a batch of next-token logits ``[B, V]`` (a single ``[V]`` row also works) and returns a
new tensor; nothing is modified in place and nothing loops over tokens in Python. The order ftlib's
``generate`` uses is the article's: temperature, repetition penalty, top-k, top-p, then softmax and sample.
(Hugging Face applies the penalty before the temperature; for a positive temperature the two orders give the
same result, because dividing by the temperature never changes a logit's sign.)

Each step matches the transformers logits processor of the same name (``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, ``RepetitionPenaltyLogitsProcessor``); ``tests/test_sampling.py``
checks that on random logits, and checks on purpose where the article's windowed penalty differs.
"""
from __future__ import annotations

import torch
from torch import Tensor


def check_temperature(temperature: float) -> None:
    """Raise one clear ``ValueError`` for a temperature that is not > 0 (used by every sampler here)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}. For deterministic output use greedy "
                         "decoding instead (do_sample=False), which always picks the most likely token.")


def check_top_k(top_k: int) -> None:
    """Raise one clear ``ValueError`` for a negative ``top_k`` (0 means off)."""
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 turns top-k filtering off), got {top_k}.")


def check_top_p(top_p: float) -> None:
    """Raise one clear ``ValueError`` for a ``top_p`` outside (0, 1]."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1.0 turns top-p filtering off), got {top_p}.")


def check_penalty(penalty: float) -> None:
    """Raise one clear ``ValueError`` for a repetition penalty that is not > 0."""
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 turns it off, > 1 discourages repeats), got {penalty}.")


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide the logits by ``temperature``: below 1 sharpens the distribution, above 1 flattens it."""
    check_temperature(temperature)
    return logits / temperature


def apply_top_k(logits: Tensor, top_k: int) -> Tensor:
    """Keep the ``top_k`` largest logits per row (ties with the k-th are kept), set the rest to -inf.

    ``top_k=0`` keeps everything. A k larger than the vocabulary keeps everything too.
    """
    check_top_k(top_k)
    if top_k == 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability sums to ``top_p``.

    The most likely token always survives, so a tiny ``top_p`` degenerates to greedy rather than to nothing.
    """
    check_top_p(top_p)
    if top_p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - top_p  # the low-probability tail, in ascending order
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(
    logits: Tensor,
    previous_ids: Tensor,
    penalty: float,
    window: int | None = None,
    per_occurrence: bool = False,
) -> Tensor:
    """Make tokens in ``previous_ids`` (``[B, T]``) less likely: positive logits / penalty, negative * penalty.

    Two semantics, chosen by the arguments:

    * Hugging Face (default: ``window=None, per_occurrence=False``): ``previous_ids`` is the *whole* sequence so
      far, prompt included, and each distinct token is penalised once however often it appeared.
    * The article (``window=N, per_occurrence=True``): ``previous_ids`` is only the *generated* tokens, only the
      last N count, and the penalty compounds per occurrence, because the article's loop walks the window token
      by token: a token seen 3 times is divided (or multiplied) by ``penalty ** 3``.

    So the article never penalises words of the prompt, forgets a word N tokens later, and punishes a word
    that keeps repeating harder each time. ``generate`` uses the article's form when given
    ``repetition_penalty_range`` and Hugging Face's otherwise.
    """
    check_penalty(penalty)
    if window is not None and window < 0:
        raise ValueError(f"repetition_penalty_range must be >= 0 tokens, got {window}.")
    single = logits.dim() == 1
    if single:
        logits, previous_ids = logits.unsqueeze(0), previous_ids.reshape(1, -1)
    if window is not None:
        previous_ids = previous_ids[:, previous_ids.shape[1] - min(window, previous_ids.shape[1]):]
    if penalty == 1.0 or previous_ids.numel() == 0:
        return logits[0] if single else logits
    if per_occurrence:
        ones = torch.ones_like(previous_ids, dtype=logits.dtype)
        counts = torch.zeros_like(logits).scatter_add_(-1, previous_ids, ones)
        factor = torch.pow(torch.as_tensor(penalty, dtype=logits.dtype, device=logits.device), counts)
        out = torch.where(logits > 0, logits / factor, logits * factor)
    else:
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, previous_ids, True)
        out = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    return out[0] if single else out


def process_logits(
    logits: Tensor,
    previous_ids: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    window: int | None = None,
    per_occurrence: bool = False,
) -> Tensor:
    """All four steps in the order ``generate`` applies them (the article's order)."""
    logits = apply_temperature(logits, temperature)
    if repetition_penalty != 1.0 and previous_ids is not None:
        logits = apply_repetition_penalty(logits, previous_ids, repetition_penalty, window, per_occurrence)
    return apply_top_p(apply_top_k(logits, top_k), top_p)


def top_tokens(logits: Tensor, tokenizer, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens of one row of logits, as (text, probability) pairs."""
    probs = logits.float().reshape(-1).softmax(dim=-1)
    values, ids = probs.topk(k)
    return [(tokenizer.decode([i]), p) for i, p in zip(ids.tolist(), values.tolist())]
