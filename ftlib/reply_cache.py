"""Greedy replies already generated, kept on disk so that the same model is not asked the same question twice.

Notebooks 05, 08 and 09 measure the same two models on the same prompts: 05 scores its model on the short-answer
test half and the held-out instructions, 08 starts from that model and scores it again beside its own, 09 scores
both. A greedy reply is a function of the weights, the prompt and the decoding settings, so the second ask can
read the first answer (lm-evaluation-harness keeps such a cache too).

* **The key is the model's content, not its path**: a SHA-256 of every parameter and buffer (name, dtype, shape,
  bytes), about 0.7 s for Gemma-3-270M. Retrain, merge or cast the model and it is another model: nothing is read.
* **Then the prompt and the settings**: the rendered prompt, ``max_new_tokens``, the resolved stop-token ids,
  ``add_special_tokens``, the tokenizer (class, vocabulary size, special ids), and the code that generates: the
  versions of torch and transformers and a hash of ftlib's generation modules (edit them and nothing is read).
* **One reply per prompt**, whatever batch it was generated in. A reply generated beside other prompts can differ
  from one generated alone in the last bits of its logits (padding changes the sums), rarely its greedy text: the
  cache returns the reply this model gave to this prompt, in the batch it was first asked in.
* **One JSON-lines file per model** (``<dir>/<model key>.jsonl``), rewritten atomically when replies are added.
  A file that cannot be read is ignored and rewritten: the cache is never the only copy of anything.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path

import torch
import transformers

from ftlib import generation, sampling, stopping
from ftlib.generation import Generation
from ftlib.stopping import default_stop_token_ids

__all__ = ["ReplyCache", "model_key"]


def model_key(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (tied weights once): equal keys = equal weights."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().data if data.numel() else b"")
    return digest.hexdigest()[:32]


@functools.cache
def _code_key() -> list[str]:
    """What generates a reply besides the weights: torch, transformers and ftlib's generation code."""
    sources = hashlib.sha256()
    for module in (generation, sampling, stopping):
        sources.update(Path(module.__file__).read_bytes())
    return [torch.__version__, transformers.__version__, sources.hexdigest()[:16]]


def _settings_key(model, tokenizer, max_new_tokens: int, stop_token_ids: Collection[int] | None,
                  add_special_tokens: bool) -> str:
    stops = sorted(stop_token_ids) if stop_token_ids is not None else sorted(default_stop_token_ids(model, tokenizer))
    return json.dumps({"max_new_tokens": max_new_tokens, "stops": stops, "special": add_special_tokens,
                       "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.bos_token_id,
                                     tokenizer.eos_token_id, tokenizer.pad_token_id], "code": _code_key()},
                      sort_keys=True)


class ReplyCache:
    """Greedy replies on disk under ``directory``, keyed by model content, prompt and settings (module docstring)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.hits = self.misses = 0  # over this object's life: what the last ``lookup`` calls found

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.jsonl"

    def _read(self, key: str) -> dict[str, dict]:
        try:
            lines = self._path(key).read_text(encoding="utf-8").splitlines()
            return {row["key"]: row for row in map(json.loads, lines)}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # missing or unreadable: regenerate (and rewrite it whole)

    @staticmethod
    def _entry_key(settings: str, prompt: str) -> str:
        return hashlib.sha256(f"{settings}\n{prompt}".encode()).hexdigest()

    def lookup(self, model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
               stop_token_ids: Collection[int] | None = None, add_special_tokens: bool = True
               ) -> tuple[str, str, list[Generation | None]]:
        """(model key, settings key, the cached reply of each prompt or None)."""
        key = model_key(model)
        settings = _settings_key(model, tokenizer, max_new_tokens, stop_token_ids, add_special_tokens)
        rows = self._read(key)
        found = []
        for prompt in prompts:
            row = rows.get(self._entry_key(settings, prompt))
            found.append(None if row is None else Generation(row["text"], list(row["token_ids"]),
                                                             row["finish_reason"]))
        self.hits += sum(g is not None for g in found)
        self.misses += sum(g is None for g in found)
        return key, settings, found

    def store(self, key: str, settings: str, prompts: Sequence[str], replies: Sequence[Generation]) -> None:
        """Add replies to the model's file: written to a temporary file, then renamed over it."""
        rows = self._read(key)
        for prompt, reply in zip(prompts, replies, strict=True):
            entry = self._entry_key(settings, prompt)
            rows[entry] = {"key": entry, "text": reply.text, "token_ids": list(reply.token_ids),
                           "finish_reason": reply.finish_reason}
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows.values())
            os.replace(tmp, self._path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
