"""When generation stops: end-of-sequence tokens, stop strings, a token budget.

``generate`` and ``stream_generate`` (ftlib.generation) share these rules, so a streamed reply joins up to exactly
the text ``generate`` returns: the same stop tokens, the same first stop string cut, and, while streaming, text
held back that might still become a stop string (or is half of a multi-byte character).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["StopSettings", "default_stop_token_ids", "find_stop", "held_back"]


def default_stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """End-of-sequence ids from the model's generation config and the tokenizer (chat models end turns so)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def find_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    """Where the first stop string starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stop_strings: Sequence[str]) -> int:
    """How many trailing characters to hold back: an unfinished UTF-8 character or the start of a stop string."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for s in stop_strings:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


@dataclass(frozen=True)
class StopSettings:
    """When one ``generate`` call stops, and how its prompts are encoded and its draws seeded; validated once."""

    max_new_tokens: int = 100
    stop_token_ids: frozenset[int] | None = None  # None: the model's end-of-sequence ids
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None
    add_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        strings = self.stop_strings
        strings = (strings,) if isinstance(strings, str) else tuple(strings or ())
        if any(not s for s in strings):
            raise ValueError("stop_strings must not contain an empty string (it would stop before the first token).")
        object.__setattr__(self, "stop_strings", strings)
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", frozenset(self.stop_token_ids))
