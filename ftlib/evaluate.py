"""Measure what fine-tuning did: held-out response loss and perplexity, stop rate, reply lengths, fixed probes.

* **Response-only loss** on held-out samples: the mean cross-entropy over *trained* (response) tokens, as in
  training, so train and eval numbers compare. **Perplexity** = exp(loss): the effective number of tokens the
  model hesitates between at each step of a reply (1 = certain; the vocabulary size = clueless).
* **Stop rate**: the share of replies that emit the end token before the length limit. A model that never
  learned its end token (the article's pad = eos masking bug) rambles until ``max_new_tokens``: its loss can look
  fine while almost none of its replies stop.
* **Reply lengths**: tokens before the end token (or the limit). A spike at the limit = replies that never stop.
* **Repetition**: the share of replies that repeat some 3-gram of words 4 or more times (``repeats_ngram``): the
  loop a small model falls into when it does not know how to end ("1. 1. 1. 1.", one line four times).
* **Probes**: a fixed list of prompts answered greedily before and after, so changes are seen, not guessed.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ftlib.generation import Generation, generate
from ftlib.loss import token_losses
from ftlib.objective import evaluate_loss
from ftlib.reply_cache import ReplyCache


# ---------------------------------------------------------------- loss and perplexity
def perplexity(loss: float) -> float:
    """exp(mean per-token loss in nats); inf if the loss is too large to exponentiate."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def response_loss(model, loader, end_token_ids: Collection[int] | None = None) -> dict[str, float]:
    """Mean loss over the trained (response) tokens of a held-out loader, and its perplexity.

    With ``end_token_ids`` the loss is also split into ``content_loss`` (every trained token but the end token)
    and ``end_loss`` (the end token alone): a model that never learned to stop has a normal content loss and a
    huge end loss - the overall mean hides it, because there is one end token per reply.
    """
    if end_token_ids is None:
        loss = evaluate_loss(model, loader)
        return {"loss": loss, "perplexity": perplexity(loss)}
    ends = torch.tensor(sorted(set(end_token_ids)))
    sums = {"all": 0.0, "content": 0.0, "end": 0.0}
    counts = dict.fromkeys(sums, 0)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            losses, trained = token_losses(model, {k: v for k, v in batch.items() if k != "labels"},
                                           batch["labels"])
            is_end = torch.isin(batch["labels"][:, 1:][trained], ends.to(device))
            for key, mask in (("all", torch.ones_like(is_end)), ("content", ~is_end), ("end", is_end)):
                sums[key] += float(losses[mask].double().sum())
                counts[key] += int(mask.sum())
    model.train(was_training)
    mean = {k: sums[k] / counts[k] if counts[k] else math.nan for k in sums}
    return {"loss": mean["all"], "perplexity": perplexity(mean["all"]), "content_loss": mean["content"],
            "end_loss": mean["end"], "end_tokens": counts["end"]}


# ---------------------------------------------------------------- stop rate and lengths
def reply_length(token_ids: Sequence[int], stop_ids: Collection[int]) -> tuple[int, bool]:
    """``(tokens before the first stop token, whether there was one)`` for the *generated* ids of one reply.

    Works on ``Generation.token_ids`` and on rows cut from ``model.generate`` output, where finished rows are
    padded with the pad id - which is the end token itself for SmolLM2; the first one is the real stop.
    """
    for i, token in enumerate(token_ids):
        if int(token) in stop_ids:
            return i, True
    return len(token_ids), False


def stop_rate(replies: Sequence[Generation | Sequence[int]], stop_ids: Collection[int] | None = None) -> float:
    """Share of replies that ended with a stop token (not at the length limit).

    ``replies``: ``Generation`` objects (their ``finish_reason`` decides; a stop string counts as a stop) or lists
    of generated token ids with ``stop_ids``.
    """
    if not replies:
        raise ValueError("no replies given: stop rate is undefined for an empty list")
    return float(np.mean([_stopped(r, stop_ids) for r in replies]))


def _stopped(reply, stop_ids) -> bool:
    if isinstance(reply, Generation):
        return reply.finish_reason != "length"
    if stop_ids is None:
        raise ValueError("token-id replies need stop_ids (e.g. {tokenizer.eos_token_id})")
    return reply_length(reply, set(stop_ids))[1]


def reply_lengths(replies: Sequence[Generation | Sequence[int]], stop_ids: Collection[int] | None = None) -> list[int]:
    """Tokens per reply, the stop token excluded."""
    lengths = []
    for r in replies:
        if isinstance(r, Generation):
            lengths.append(len(r.token_ids) - (r.finish_reason == "eos"))
        else:
            if stop_ids is None:
                raise ValueError("token-id replies need stop_ids (e.g. {tokenizer.eos_token_id})")
            lengths.append(reply_length(r, set(stop_ids))[0])
    return lengths


_WORD = re.compile(r"\w+|[^\w\s]")


def repeats_ngram(tokens: str | Sequence, n: int = 3, times: int = 4) -> bool:
    """Whether some n-gram occurs ``times`` or more times: the sign of a reply stuck in a loop. ``tokens`` is a
    sequence (token ids, words) or a text, read as lower-cased words where each punctuation mark counts as a word.
    Overlapping occurrences count ("1.1.1.1.1" repeats "1 . 1" four times); a short reply or a list of different
    items does not."""
    if n < 1 or times < 2:
        raise ValueError(f"n must be >= 1 and times >= 2, got n={n}, times={times}")
    words = _WORD.findall(tokens.lower()) if isinstance(tokens, str) else list(tokens)
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def repetition_rate(replies: Sequence[Generation | str], n: int = 3, times: int = 4) -> float:
    """Share of replies (``Generation`` objects or strings) for which ``repeats_ngram`` holds."""
    if not replies:
        raise ValueError("no replies given: the repetition rate is undefined for an empty list")
    texts = [r.text if isinstance(r, Generation) else r for r in replies]
    return float(np.mean([repeats_ngram(t, n, times) for t in texts]))


# ---------------------------------------------------------------- generation-based evaluation
@dataclass
class GenerationReport:
    """Replies to a fixed prompt set and their summary."""

    prompts: list[str]
    replies: list[Generation]
    max_new_tokens: int

    @property
    def stop_rate(self) -> float:
        return stop_rate(self.replies)

    @property
    def lengths(self) -> list[int]:
        return reply_lengths(self.replies)

    @property
    def repetition_rate(self) -> float:
        return repetition_rate(self.replies)

    def select(self, indices: Iterable[int]) -> GenerationReport:
        """The report of a subset of the prompts: one batched ``generate_replies`` call can serve several reports."""
        indices = list(indices)
        return GenerationReport([self.prompts[i] for i in indices], [self.replies[i] for i in indices],
                                self.max_new_tokens)

    def summary(self) -> dict[str, float]:
        lengths = np.asarray(self.lengths)
        return {"stop_rate": self.stop_rate, "mean_length": float(lengths.mean()),
                "median_length": float(np.median(lengths)),
                "at_limit": float(np.mean([r.finish_reason == "length" for r in self.replies])),
                "repetition_rate": self.repetition_rate}


def generate_replies(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 8,
                     stop_token_ids: Collection[int] | None = None, add_special_tokens: bool = True,
                     progress: bool = False, cache: ReplyCache | None = None) -> GenerationReport:
    """Greedy replies to ``prompts`` (already formatted with the model's template), batched, with finish reasons.

    Stop tokens default to the model's and tokenizer's end-of-sequence ids (see ``ftlib.generation``). Pass
    ``add_special_tokens=False`` for prompts rendered by a chat template that already includes BOS. With a
    ``cache`` (``ftlib.reply_cache``), replies this model already gave to these prompts under these settings are
    read back and only the others are generated (in batches of ``batch_size``), then stored.
    """
    from ftlib.progress import progress_bar

    if not prompts:
        raise ValueError("no prompts given")
    replies: list[Generation | None] = [None] * len(prompts)
    if cache is not None:
        key, settings, replies = cache.lookup(model, tokenizer, prompts, max_new_tokens, stop_token_ids,
                                              add_special_tokens)
    todo = [i for i, reply in enumerate(replies) if reply is None]
    for start in progress_bar(range(0, len(todo), batch_size), desc="generating", disable=not progress):
        rows = todo[start:start + batch_size]
        batch = generate(model, tokenizer, [prompts[i] for i in rows], max_new_tokens=max_new_tokens,
                         do_sample=False, stop_token_ids=stop_token_ids, add_special_tokens=add_special_tokens,
                         return_details=True)
        for i, reply in zip(rows, batch):
            replies[i] = reply
    if cache is not None and todo:
        cache.store(key, settings, [prompts[i] for i in todo], [replies[i] for i in todo])
    return GenerationReport(list(prompts), replies, max_new_tokens)


def probe_table(reports: dict[str, GenerationReport], width: int = 70) -> str:
    """Side-by-side text of each model's reply to every probe (first ``width`` characters, newlines shown as ⏎),
    with ``[stop]`` or ``[limit]`` to say how the reply ended."""
    names = list(reports)
    first = reports[names[0]]
    lines = []
    for i in range(len(first.prompts)):
        lines.append(f"### probe {i + 1}")
        for name in names:
            reply = reports[name].replies[i]
            text = reply.text.strip().replace("\n", "⏎")
            if len(text) > width:
                text = text[:width - 1] + "…"
            end = "[limit]" if reply.finish_reason == "length" else "[stop]"
            lines.append(f"  {name:>8} {end:7} {text}")
    return "\n".join(lines)
