"""Training samples: validated records to ``input_ids`` / ``attention_mask`` / ``labels``.

Label convention (Hugging Face's): ``labels[i]`` belongs to the same position as ``input_ids[i]`` and is -100 where
nothing is trained. Labels are NOT shifted here: the model shifts them itself (logits at ``t`` predict
``labels[t + 1]``), so batches go straight into ``model(**batch)``.

Three rules the article's dataset code breaks, enforced here:

* every response ends with its end token (EOS, or the template's end-of-turn token) and that token is trained on
  — with pad == eos (SmolLM2) masking "the pad id" would silently drop it, so padding is masked later by
  *position* (see ``ftlib.batching``), never by token id;
* only responses are trained on by default (prompt and non-assistant turns get -100; ``train_on_prompt=True``
  trains on everything);
* over-long samples follow an explicit policy (``overlong``): ``"error"`` (a bad record, see ``on_error``),
  ``"drop"``, or ``"truncate"`` (cut the *prompt* side from the left, after a leading BOS; a response is never cut,
  so its end token always survives).

Chat assistant spans are found without ``{% generation %}`` tags: for assistant message ``i`` the template is
rendered for ``messages[:i]`` plus the generation prompt and for ``messages[:i + 1]``; the text between the two,
up to and including the end token, is the span. Tokens whose first character falls in a span are trained on.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # `datasets` is imported where it is used: batching must work without it (GPU box)
    import datasets
    from transformers import PreTrainedTokenizerBase

from ftlib.schema import (
    IGNORE_INDEX,
    DataError,
    SampleError,
    validate_instruction,
    validate_messages,
)
from ftlib.templates import format_alpaca

Overlong = Literal["error", "drop", "truncate"]


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad with: the tokenizer's pad token, else its EOS (SmolLM2 pads with EOS). Safe either way,
    because padding is masked by position, never by id (see the module docstring)."""
    for pad in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if pad is not None:
            return pad
    raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


# ---------------------------------------------------------------- chat spans
def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], chat_template: str | None = None,
                add_generation_prompt: bool = False) -> str:
    """The chat as text, with ``chat_template`` (e.g. ``ARTICLE_CHAT_TEMPLATE``) or the tokenizer's own."""
    if chat_template is None and not tokenizer.chat_template:
        raise ValueError("this tokenizer has no chat template; "
                         "pass chat_template=ftlib.templates.ARTICLE_CHAT_TEMPLATE")
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer: PreTrainedTokenizerBase, messages: list[dict], chat_template: str | None = None,
                         end_token: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """Rendered chat and, per assistant turn, the ``[start, end)`` characters to train on (content + end token)."""
    end_token = end_token or tokenizer.eos_token
    full = render_chat(tokenizer, messages, chat_template)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], chat_template, add_generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1], chat_template)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ValueError("the chat template does not render conversations prefix by prefix, so assistant spans "
                             "cannot be located; use a template whose output only grows as turns are added")
        end = upto.rfind(end_token, len(before))
        if end < 0:
            raise ValueError(f"the end token {end_token!r} does not follow assistant turn {i}; pass end_token= "
                             "with the template's end-of-turn token")
        spans.append((len(before), end + len(end_token)))
    return full, spans


# ---------------------------------------------------------------- assembly
@dataclass(frozen=True)
class SampleSettings:
    """How records become samples: the options one ``tokenise_*`` call applies to every record, checked once."""

    style: str = "alpaca"  # Alpaca records: ftlib.templates.format_alpaca's style
    chat_template: str | None = None  # chats: None = the tokenizer's own
    end_token: str | None = None  # chats: the end-of-turn token (None = the tokenizer's EOS)
    train_on_prompt: bool = False
    max_length: int | None = None
    overlong: Overlong = "error"
    on_error: Literal["raise", "skip"] = "raise"

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip") or self.overlong not in ("error", "drop", "truncate"):
            raise ValueError("on_error must be 'raise' or 'skip'; overlong must be 'error', 'drop' or 'truncate'")


def _finish(ids: list[int], spans: list[tuple[int, int]], tokenizer: PreTrainedTokenizerBase,
            settings: SampleSettings, index: int | None) -> tuple[dict | None, int]:
    """Apply the over-length policy, then build the sample. ``spans``: ``[start, end)`` token ranges to train on.

    Returns ``(sample or None if dropped, number of prompt tokens cut)``.
    """
    cut, max_length = 0, settings.max_length
    if max_length is not None and len(ids) > max_length:
        if settings.overlong == "drop":
            return None, 0
        if settings.overlong != "truncate":
            raise SampleError(index, "input_ids", f"is {len(ids)} tokens, longer than max_length={max_length}; "
                                                  "raise max_length or pass overlong='truncate' or 'drop'")
        head = 1 if ids and ids[0] == tokenizer.bos_token_id else 0
        cut = len(ids) - max_length
        last_start = spans[-1][0]
        if head + cut > last_start:
            raise SampleError(index, "input_ids", f"the response alone needs {len(ids) - last_start + head} tokens, "
                                                  f"more than max_length={max_length}; it cannot be kept whole")
        ids = ids[:head] + ids[head + cut:]
        spans = [(a - cut, b - cut) for a, b in spans if a >= head + cut]  # a partly cut response is not trained
    if settings.train_on_prompt:
        labels = list(ids)
    else:
        labels = [IGNORE_INDEX] * len(ids)
        for a, b in spans:
            labels[a:b] = ids[a:b]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "length": len(ids)}, cut


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of many texts; straight through the Rust tokenizer when there is one (skips per-text wrapping)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
    return tokenizer(texts, add_special_tokens=add_special_tokens).input_ids


def tokenise_instruction(record: dict, tokenizer: PreTrainedTokenizerBase, style: str = "alpaca",
                         train_on_prompt: bool = False, max_length: int | None = None,
                         overlong: Overlong = "error", index: int | None = None) -> dict | None:
    """One Alpaca record to a sample (None if dropped). Same code path as the batched ``tokenise_dataset``."""
    settings = SampleSettings(style=style, train_on_prompt=train_on_prompt, max_length=max_length,
                              overlong=overlong)
    return _instruction_batch([record], [index], tokenizer, settings)[0][0]


def tokenise_chat(messages: list[dict], tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None,
                  train_on_prompt: bool = False, max_length: int | None = None, overlong: Overlong = "error",
                  end_token: str | None = None, index: int | None = None) -> dict | None:
    """One chat to a sample (None if dropped): every non-assistant token masked unless ``train_on_prompt``."""
    settings = SampleSettings(chat_template=chat_template, end_token=end_token, train_on_prompt=train_on_prompt,
                              max_length=max_length, overlong=overlong)
    return _chat_batch([messages], [index], tokenizer, settings)[0][0]


def _instruction_batch(records: list, indices: list[int | None], tokenizer: PreTrainedTokenizerBase,
                       settings: SampleSettings) -> list[tuple[dict | None, int, str]]:
    """``(sample or None, prompt tokens cut, why it was dropped or "")`` per record."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one so responses can end")
    results: list = [None] * len(records)
    valid = []
    for k, (r, i) in enumerate(zip(records, indices)):
        try:
            validate_instruction(r, i)
            valid.append(k)
        except SampleError as e:
            if settings.on_error != "skip":
                raise
            results[k] = (None, 0, str(e))
    pairs = [format_alpaca(records[k], settings.style) for k in valid]
    prompts = _encode(tokenizer, [p for p, _ in pairs], add_special_tokens=True)
    responses = _encode(tokenizer, [r for _, r in pairs], add_special_tokens=False)
    for k, p, r in zip(valid, prompts, responses):
        ids = p + r + [tokenizer.eos_token_id]
        results[k] = _guarded(ids, [(len(p), len(ids))], tokenizer, settings, indices[k])
    return results


def _chat_batch(chats: list, indices: list[int | None], tokenizer: PreTrainedTokenizerBase,
                settings: SampleSettings) -> list[tuple[dict | None, int, str]]:
    """``_instruction_batch`` for chats: the assistant spans of each rendered chat are trained on."""
    results: list = [None] * len(chats)
    valid, texts, char_spans = [], [], []
    for k, (messages, i) in enumerate(zip(chats, indices)):
        try:
            validate_messages(messages, i)
            text, spans = assistant_char_spans(tokenizer, messages, settings.chat_template, settings.end_token)
        except SampleError as e:
            if settings.on_error != "skip":
                raise
            results[k] = (None, 0, str(e))
            continue
        valid.append(k), texts.append(text), char_spans.append(spans)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else None
    for n, k in enumerate(valid):
        ids, offsets, spans = enc.input_ids[n], enc.offset_mapping[n], char_spans[n]
        starts = [start for start, _ in offsets]  # a token belongs where its first character is
        token_spans = [(bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)) for a, b in spans]
        results[k] = _guarded(ids, token_spans, tokenizer, settings, indices[k])
    return results


def _guarded(ids: list[int], spans: list[tuple[int, int]], tokenizer: PreTrainedTokenizerBase,
             settings: SampleSettings, index: int | None) -> tuple[dict | None, int, str]:
    try:
        sample, cut = _finish(ids, spans, tokenizer, settings, index)
        reason = "" if sample else f"record {index}: longer than max_length={settings.max_length} (dropped)"
        return sample, cut, reason
    except SampleError as e:
        if settings.on_error != "skip":
            raise
        return None, 0, str(e)


# ---------------------------------------------------------------- datasets
@dataclass
class SampleReport:
    """What ``tokenise_dataset`` did: records kept, dropped (index -> reason), prompt-truncated (index -> cut)."""

    total: int
    dropped: dict[int, str] = field(default_factory=dict)
    truncated: dict[int, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.total - len(self.dropped)

    def __str__(self) -> str:
        lines = [f"{self.kept}/{self.total} records kept, {len(self.dropped)} dropped, "
                 f"{len(self.truncated)} prompt-truncated"]
        lines += [f"  dropped {reason}" for reason in list(self.dropped.values())[:10]]
        return "\n".join(lines)


def tokenise_dataset(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, *, style: str = "alpaca",
                     chat_template: str | None = None, end_token: str | None = None, train_on_prompt: bool = False,
                     max_length: int | None = None, overlong: Overlong = "error",
                     on_error: Literal["raise", "skip"] = "raise", batch_size: int = 1000,
                     num_proc: int | None = None) -> tuple[datasets.Dataset, SampleReport]:
    """Tokenise a whole dataset with ``datasets.map(batched=True)``: columns ``input_ids, attention_mask, labels,
    length``. A ``messages`` column means chats (``chat_template``/``end_token`` apply), else Alpaca records
    (``style`` applies). With ``on_error="skip"`` bad records are dropped and listed in the report."""
    import datasets
    from datasets.fingerprint import Hasher

    settings = SampleSettings(style=style, chat_template=chat_template, end_token=end_token,
                              train_on_prompt=train_on_prompt, max_length=max_length, overlong=overlong,
                              on_error=on_error)
    is_chat = "messages" in ds.column_names
    if not is_chat and not {"instruction", "output"} & set(ds.column_names):
        raise DataError(f"the dataset has columns {ds.column_names}, neither 'messages' (chats) nor 'instruction'/"
                        "'output' (Alpaca records); rename its columns to one of these schemas")

    def batch_fn(batch: dict, indices: list[int]) -> dict:
        if is_chat:
            results = _chat_batch(batch["messages"], indices, tokenizer, settings)
        else:
            keys = list(batch)
            records = [dict(zip(keys, row)) for row in zip(*batch.values())]
            results = _instruction_batch(records, indices, tokenizer, settings)
        out = {k: [] for k in ("input_ids", "attention_mask", "labels", "length", "_cut", "_dropped")}
        for sample, cut, reason in results:
            sample = sample or {"input_ids": [], "attention_mask": [], "labels": [], "length": 0}
            for key, value in sample.items():
                out[key].append(value)
            out["_cut"].append(cut), out["_dropped"].append(reason)
        return out

    ints = datasets.List(datasets.Value("int32"))
    features = datasets.Features({"input_ids": ints, "attention_mask": ints, "labels": ints,
                                  "length": datasets.Value("int32"), "_cut": datasets.Value("int32"),
                                  "_dropped": datasets.Value("string")})  # declared: no type inference per batch
    # datasets names a map's result by hashing its function, here a closure over the tokenizer: pickling Gemma-3's
    # 262k-token tokenizer was 14 of the 14.6 s it took to tokenise notebook 05's 412 chats. A hash of what decides
    # the result names it instead, and no cache file is ever read back under that name (the tokenizer is in it by
    # class, name, size and template, not byte for byte).
    fingerprint = Hasher.hash([getattr(ds, "_fingerprint", None), settings, is_chat, batch_size,
                               type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
                               tokenizer.chat_template])
    out = ds.map(batch_fn, batched=True, batch_size=batch_size, with_indices=True, num_proc=num_proc,
                 remove_columns=ds.column_names, features=features, desc="tokenising",
                 new_fingerprint=fingerprint, load_from_cache_file=False)
    status = out.select_columns(["_dropped", "_cut"])[:]  # whole columns at once, not row by row
    reasons, cuts = status["_dropped"], status["_cut"]
    report = SampleReport(len(ds), {i: r for i, r in enumerate(reasons) if r},
                          {i: c for i, c in enumerate(cuts) if c})
    if report.dropped:
        out = out.select([i for i, r in enumerate(reasons) if not r])
    return out.remove_columns(["_cut", "_dropped"]), report
