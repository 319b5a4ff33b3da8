"""Text generation with a KV cache: the article's sampler, made fast, batched and streamable.

The article's loop feeds the *whole* sequence through the model for every new token. A transformer's keys
and values for earlier positions never change, so ``generate`` keeps them (the KV cache) and feeds only the
newest token: each step costs one token's forward pass instead of the whole sequence's.

Speed also depends on the dtype: load the model with ``dtype=ftlib.device.generation_dtype()`` (bf16 on CUDA;
fp32 on CPU unless FTLIB_CPU_GENERATION_DTYPE=bf16 or auto, because there the faster one depends on the machine)
or call ``to_generation_dtype(model)``. ``generate`` itself never casts your model. The article's no-cache loop,
kept for comparison, is ``ftlib.course.article.article_generate``.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ftlib.device import generation_dtype
from ftlib.samples import pad_token_id
from ftlib.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    check_penalty,
    check_temperature,
    check_top_k,
    check_top_p,
)
from ftlib.stopping import StopSettings, default_stop_token_ids, find_stop, held_back


@dataclass
class Generation:
    """One finished reply: the text (stop token or stop string removed) and why it ended."""

    text: str
    token_ids: list[int] = field(default_factory=list)  # everything sampled, the stop token included
    finish_reason: str = "length"  # "eos" | "stop_string" | "length" (hit max_new_tokens or the context)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class SamplingSettings:
    """The knobs of one ``generate`` call, validated once."""

    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    repetition_penalty_range: int | None = None  # None: Hugging Face's penalty; N: the article's window

    def __post_init__(self) -> None:
        if self.do_sample:
            check_temperature(self.temperature)
        check_top_k(self.top_k)
        check_top_p(self.top_p)
        check_penalty(self.repetition_penalty)
        if self.repetition_penalty_range is not None and self.repetition_penalty_range < 0:
            raise ValueError(f"repetition_penalty_range must be >= 0, got {self.repetition_penalty_range}.")

    def pick(self, logits: Tensor, sequence: Tensor, prompt_length: int, generator: torch.Generator | None) -> Tensor:
        """Next token per row from ``[B, V]`` logits; ``sequence`` is prompt + generated so far."""
        if self.repetition_penalty != 1.0:
            if self.repetition_penalty_range is None:
                logits = apply_repetition_penalty(logits, sequence, self.repetition_penalty)
            else:
                logits = apply_repetition_penalty(logits, sequence[:, prompt_length:], self.repetition_penalty,
                                                  window=self.repetition_penalty_range, per_occurrence=True)
        if not self.do_sample:
            return logits.argmax(dim=-1)
        logits = apply_top_p(apply_top_k(apply_temperature(logits, self.temperature), self.top_k), self.top_p)
        return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)


def to_generation_dtype(model: PreTrainedModel) -> PreTrainedModel:
    """Cast ``model`` (in place) to ``ftlib.device.generation_dtype`` for its device."""
    return model.to(generation_dtype(model.device))


def context_length(model: PreTrainedModel) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(config, "max_position_embeddings", None) or 2**31)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], model: PreTrainedModel,
                   add_special_tokens: bool = True) -> tuple[Tensor, Tensor]:
    """Token ids, left-padded (so every row's next token sits in the last column), and the attention mask."""
    if not prompts:
        raise ValueError("No prompts given: pass a string or a non-empty list of strings.")
    rows = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"Prompt #{i} is empty: give the model some text to continue.")
        rows.append(tokenizer(prompt, add_special_tokens=add_special_tokens).input_ids)
    longest, limit = max(len(r) for r in rows), context_length(model)
    if longest >= limit:
        raise ValueError(f"A prompt has {longest} tokens but the model's context is {limit} tokens, leaving no "
                         "room to generate: shorten the prompt (or drop old chat turns).")
    pad = pad_token_id(tokenizer)
    input_ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows], device=model.device)
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows], device=model.device)
    return input_ids, mask


@functools.cache
def _accepts_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


@torch.inference_mode()
def token_steps(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int,
                settings: SamplingSettings, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Yield the next token of every row (``[B]``), one step at a time, reusing the KV cache.

    The caller decides when to stop (close the iterator); rows that finished keep being fed, as in
    Hugging Face's ``generate``, because their outputs are simply ignored.
    """
    prompt_length = input_ids.shape[1]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    mask = None if bool(attention_mask.all()) else attention_mask  # no padding: the plain causal path
    cache = DynamicCache(config=model.config)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(type(model)) else {}
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                   past_key_values=cache, use_cache=True, **extra).logits[:, -1].float()
    sequence = input_ids
    for step in range(max_new_tokens):
        next_tokens = settings.pick(logits, sequence, prompt_length, generator)
        yield next_tokens
        if step == max_new_tokens - 1:
            return
        sequence = torch.cat([sequence, next_tokens[:, None]], dim=1)
        position_ids = position_ids[:, -1:] + 1
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=position_ids,
                       past_key_values=cache, use_cache=True).logits[:, -1].float()


def _prepare(model, tokenizer, prompts: list[str], settings: SamplingSettings,
             stop: StopSettings) -> tuple[Iterator[Tensor], set[int], list[str]]:
    """The token iterator for ``prompts``, the stop ids and the stop strings."""
    input_ids, mask = encode_prompts(tokenizer, prompts, model, stop.add_special_tokens)
    max_new_tokens = min(stop.max_new_tokens, context_length(model) - input_ids.shape[1])
    stops = default_stop_token_ids(model, tokenizer) if stop.stop_token_ids is None else set(stop.stop_token_ids)
    generator = None if stop.seed is None else torch.Generator(device=model.device).manual_seed(stop.seed)
    steps = token_steps(model, input_ids, mask, max_new_tokens, settings, generator)
    return steps, stops, list(stop.stop_strings)


def _decode(tokenizer, ids: list[int], skip_special_tokens: bool = True) -> str:
    return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)


def _collect(tokenizer, n_rows: int, steps: Iterator[Tensor], stops: set[int],
             stop_strings: list[str]) -> list[Generation]:
    """Run ``steps`` until every row has stopped (a stop token or stop string) or the budget ends; the replies.

    A stop string is looked for in the last few tokens' text while generating (cheap), and cut from the full
    text at the end; a finished row's later tokens are ignored."""
    tail = max((len(s) for s in stop_strings), default=0) + 4  # tokens enough to hold any stop string
    outputs = [Generation("", []) for _ in range(n_rows)]
    done = [False] * n_rows
    for next_tokens in steps:
        for row, token in enumerate(next_tokens.tolist()):
            if done[row]:
                continue
            out = outputs[row]
            out.token_ids.append(token)
            if token in stops:
                out.finish_reason, done[row] = "eos", True
            elif stop_strings and find_stop(_decode(tokenizer, out.token_ids[-tail:], False),
                                            stop_strings) is not None:
                out.finish_reason, done[row] = "stop_string", True
        if all(done):
            steps.close()
            break
    for out in outputs:
        ids = out.token_ids[:-1] if out.finish_reason == "eos" else out.token_ids
        out.text = _decode(tokenizer, ids)
        cut = find_stop(out.text, stop_strings)
        if cut is not None:
            out.text = out.text[:cut]
    return outputs


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_or_prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    repetition_penalty_range: int | None = None,
    do_sample: bool = True,
    stop_token_ids: Collection[int] | None = None,
    stop_strings: str | Sequence[str] | None = None,
    seed: int | None = None,
    add_special_tokens: bool = True,
    return_details: bool = False,
) -> str | list[str] | Generation | list[Generation]:
    """Continue one prompt (returns a string) or a batch of prompts (returns a list), with a KV cache.

    Sampling follows the article: temperature, repetition penalty, top-k (plus top-p), then a random draw;
    ``do_sample=False`` is greedy (argmax after the penalty), token-for-token what
    ``model.generate(do_sample=False)`` gives. ``repetition_penalty_range=N`` uses the article's penalty
    (last N generated tokens, compounding per occurrence); ``None`` uses Hugging Face's (whole sequence, once
    per token) - see ``ftlib.sampling.apply_repetition_penalty``. Generation ends at a stop token (default:
    the model's end-of-sequence ids; ``[]`` for none), a stop string, ``max_new_tokens`` or the context length.
    ``seed`` makes sampling reproducible without touching the global RNG. Use ``add_special_tokens=False``
    for text rendered by a chat template (it already holds BOS). ``return_details=True`` returns
    ``Generation`` objects with token ids and the finish reason.
    """
    single = isinstance(prompt_or_prompts, str)
    prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
    settings = SamplingSettings(do_sample, temperature, top_k, top_p, repetition_penalty, repetition_penalty_range)
    stop = StopSettings(max_new_tokens, stop_token_ids, stop_strings, seed, add_special_tokens)
    outputs = _collect(tokenizer, len(prompts), *_prepare(model, tokenizer, prompts, settings, stop))
    if return_details:
        return outputs[0] if single else outputs
    return outputs[0].text if single else [o.text for o in outputs]


class TextStream:
    """Iterate to receive the reply piece by piece; afterwards ``text``, ``token_ids``, ``finish_reason``.

    Text that might be the start of a stop string, or half of a multi-byte character, is held back until
    the next token decides, so the pieces joined are exactly ``generate``'s text.
    """

    def __init__(self, steps: Iterator[Tensor], tokenizer: PreTrainedTokenizerBase, stops: set[int],
                 stop_strings: list[str]):
        self._steps, self._tokenizer, self._stops, self._stop_strings = steps, tokenizer, stops, stop_strings
        self.text, self.token_ids, self.finish_reason = "", [], "length"

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def __iter__(self) -> Iterator[str]:
        emitted, text = 0, ""
        for next_tokens in self._steps:
            token = int(next_tokens[0])
            self.token_ids.append(token)
            if token in self._stops:
                self.finish_reason = "eos"
                break
            text = _decode(self._tokenizer, self.token_ids)
            cut = find_stop(text, self._stop_strings)
            if cut is not None:
                text, self.finish_reason = text[:cut], "stop_string"
                break
            safe = len(text) - held_back(text, self._stop_strings)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        self._steps.close()
        self.text = text
        if len(text) > emitted:
            yield text[emitted:]


def stream_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    repetition_penalty_range: int | None = None,
    do_sample: bool = True,
    stop_token_ids: Collection[int] | None = None,
    stop_strings: str | Sequence[str] | None = None,
    seed: int | None = None,
    add_special_tokens: bool = True,
) -> TextStream:
    """``generate`` for one prompt, as text pieces while they are produced: ``for piece in stream_generate(...)``."""
    if not isinstance(prompt, str):
        raise ValueError("stream_generate takes one prompt (a string); use generate for a batch.")
    settings = SamplingSettings(do_sample, temperature, top_k, top_p, repetition_penalty, repetition_penalty_range)
    stop = StopSettings(max_new_tokens, stop_token_ids, stop_strings, seed, add_special_tokens)
    steps, stops, stop_strings = _prepare(model, tokenizer, [prompt], settings, stop)
    return TextStream(steps, tokenizer, stops, stop_strings)
