"""The source article's code, re-implemented as written (flaws included) so notebooks and benchmarks can compare.

Nothing here is meant for real use; each piece names what ftlib does instead:

* ``article_generate`` re-runs the whole sequence for every new token (no KV cache) -> ``ftlib.generation``;
* ``FineTuningDataset`` tokenises one record per ``__getitem__`` and pads every sample to ``seq_length`` (79 % of
  the Alpaca demo's tokens are padding at 1024) -> ``ftlib.samples`` + ``ftlib.batching``;
* ``drop_pad_labels``: its loss ignores the pad id, which with pad == eos drops the EOS target, so the model never
  learns to stop -> ``ftlib.samples`` keeps the end token's label and masks padding by position.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftlib.sampling import apply_repetition_penalty, apply_top_k, check_temperature
from ftlib.schema import IGNORE_INDEX
from ftlib.templates import ALPACA_PROMPT_INPUT

if TYPE_CHECKING:
    import datasets


@torch.inference_mode()
def article_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_tokens: int = 100,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    repetition_penalty_range: int = 10,
    top_k: int = 50,
    seed: int | None = None,
    stop_token_ids: Collection[int] | None = None,
) -> str:
    """The article's sampler, kept as written for comparison: no KV cache, the full sequence every step.

    Same order and semantics as the article (temperature, windowed per-occurrence penalty over generated
    tokens, top-k, multinomial), so with the same ``seed`` it draws what ``generate`` draws with
    ``repetition_penalty_range`` set - only much more slowly.
    """
    check_temperature(temperature)
    stops = {tokenizer.eos_token_id} if stop_token_ids is None else set(stop_token_ids)
    generator = None if seed is None else torch.Generator(device=model.device).manual_seed(seed)
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    generated: list[int] = []
    for _ in range(max_tokens):
        logits = model(input_ids).logits[0, -1].float() / temperature  # the whole sequence, again
        if repetition_penalty != 1.0 and generated:
            window = torch.tensor(generated, device=logits.device)
            logits = apply_repetition_penalty(logits, window, repetition_penalty, repetition_penalty_range,
                                              per_occurrence=True)
        if top_k > 0:
            logits = apply_top_k(logits, top_k)
        next_token = torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator)
        if next_token.item() in stops:
            break
        input_ids = torch.cat([input_ids, next_token[None]], dim=1)
        generated.append(next_token.item())
    return tokenizer.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class FineTuningDataset(torch.utils.data.Dataset):
    """The article's Alpaca ``FineTuningDataset``: one sample per ``__getitem__``, padded to ``seq_length``.

    Always the with-input prompt, BOS + text + EOS, padded with ``pad_token_id`` to ``seq_length + 1`` and shifted
    into ``(x, y)``. Its loss then ignores ``pad_token_id`` — which, with pad == eos, also drops the EOS target.
    """

    def __init__(self, dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, seq_length: int = 1024):
        self.dataset, self.tokenizer, self.seq_length = dataset, tokenizer, seq_length
        self.bos = torch.tensor([tokenizer.bos_token_id])
        self.eos = torch.tensor([tokenizer.eos_token_id])
        self.pad = torch.tensor([tokenizer.pad_token_id])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.dataset[index]
        text = ALPACA_PROMPT_INPUT.format(instruction=row["instruction"], input=row["input"]) + row["output"]
        tokens = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
        tokens = torch.cat([self.bos, tokens, self.eos])
        if len(tokens) < self.seq_length + 1:
            tokens = torch.cat([tokens, self.pad.repeat(self.seq_length + 1 - len(tokens))])
        return tokens[: self.seq_length], tokens[1: self.seq_length + 1]


def drop_pad_labels(labels: Sequence[int], input_ids: Sequence[int], pad_token_id: int) -> list[int]:
    """Labels as the article's loss sees them: ``CrossEntropyLoss(ignore_index=pad_token_id)`` skips every target
    equal to the pad id. With ``pad = eos`` that includes the EOS closing each response, so the model is never
    taught to stop. Use it to reproduce the bug on correctly built samples (only the EOS label changes)."""
    return [IGNORE_INDEX if token == pad_token_id else label for token, label in zip(input_ids, labels)]
