"""Checks for the exercises of notebooks 00-04 (see ``ftlib.exercises``): set-up, sampling, templates, masks.

Each check is cheap and deterministic: small hand-made tensors, or the offline SmolLM2 tokenizer (loaded once, in
a fraction of a second). None loads a model, so a verdict is the same on every machine. Worked solutions are in
``notebooks/solutions/NN_solutions.ipynb``.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper

from ftlib.batching import PaddingCollator
from ftlib.exercises import register
from ftlib.samples import assistant_char_spans, tokenise_instruction
from ftlib.sampling import apply_temperature, apply_top_k, apply_top_p
from ftlib.templates import ARTICLE_CHAT_TEMPLATE, format_alpaca

IGNORE = -100
NEG_INF = float("-inf")


@lru_cache(maxsize=1)
def _smollm2():
    """The offline instruct tokenizer (SmolLM2, ChatML): the same on every machine, whatever the profile."""
    from ftlib.models import load_tokenizer

    return load_tokenizer("instruct", "offline")


class _Unanswered(Exception):
    pass


def _call(fn: Callable, *args: Any) -> Any:
    """Call the learner's function; a body still at ``...`` returns None, which gets "not answered yet"."""
    out = fn(*args)
    if out is None or out is ...:
        raise _Unanswered(f"not answered yet: {getattr(fn, '__name__', 'your function')} returns None; "
                          "write its body in place of the `...`")
    return out


def _exercise(key: str, title: str, hint: str, success: str) -> Callable:
    """``register``, plus one verdict for every unanswered placeholder: a function whose body is ``...`` (see
    ``_call``) or a dict of predictions still all ``...`` (the framework itself handles a bare ``...``)."""
    def wrap(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        def run(answer: Any) -> str | None:
            if isinstance(answer, dict) and answer and all(v is ... for v in answer.values()):
                return "not answered yet: replace each `...` in the dict with your prediction"
            try:
                return check(answer)
            except _Unanswered as e:
                return str(e)
        register(key, title, hint, success)(run)
        return check
    return wrap


def _first_diff(got: str, want: str) -> str:
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    j = want.rfind("<|", 0, i + 1)
    i = j if j >= 0 and "|>" not in want[j:i] else i  # start of the special token the difference falls in
    return f"at character {i} yours has {got[i:i + 20]!r} where the template has {want[i:i + 20]!r}"


# ---------------------------------------------------------------- 00 · set-up
@_exercise("00.1", "keep only the generated tokens", success="generate returns prompt + answer; you kept the answer.",
          hint="`generate` returns the prompt's ids followed by the new ones: slice from the prompt's length on.")
def _check_answer_ids(fn: Callable) -> str | None:
    prompt = torch.tensor([[5, 6, 7, 8]])
    out = torch.tensor([[5, 6, 7, 8, 40, 41, 2]])
    got = _call(fn, out, prompt)
    got = torch.as_tensor(got).reshape(-1)
    if got.tolist() == [40, 41, 2]:
        return None
    if got.numel() >= 7:
        return "your ids still start with the 4 prompt tokens: slice `out[0]` from `input_ids.shape[1]` on."
    if got.tolist() == [40, 41]:
        return "you dropped the last token, the EOS: keep it, it is how you see that the model stopped by itself."
    return f"for a 4-token prompt and output {out[0].tolist()} you returned {got.tolist()}, expected [40, 41, 2]."


@_exercise("00.2", "why did generation stop?", success="a reply ending in EOS stopped by itself, even at the limit.",
          hint="Look at the last token only: EOS means the model chose to stop, anything else means the limit.")
def _check_finish_reason(fn: Callable) -> str | None:
    cases = [([30, 31, 2], 2, 20, "eos"), ([30, 31, 32], 2, 3, "length"), ([30, 31, 2], 2, 3, "eos"),
             ([30, 2, 31, 32], 2, 4, "length"), ([30, 31, 1], 1, 20, "eos")]
    for ids, eos, limit, want in cases:
        got = _call(fn, ids, eos, limit)
        if got != want:
            return (f"finish_reason({ids}, eos_id={eos}, max_new_tokens={limit}) returned {got!r}, expected "
                    f"{want!r}: " + ("an EOS as the last token means the model stopped by itself, even at the limit."
                                     if want == "eos" else "only the *last* token tells whether the model stopped."))
    return None


# ---------------------------------------------------------------- 01 · generation
def _logits() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=g) * 3
    logits[1, 5] = logits[1, 6] = logits[1].max() + 1  # a tie at the top: both must survive top-k 1
    return logits


@_exercise("01.1", "temperature by hand",
          success="your temperature matches ftlib's apply_temperature and Hugging Face's TemperatureLogitsWarper.",
          hint="Divide the logits by the temperature: below 1 the gaps between logits grow, above 1 they shrink.")
def _check_temperature(fn: Callable) -> str | None:
    for t in (0.5, 1.0, 1.5):
        logits = _logits()
        got = torch.as_tensor(_call(fn, logits, t), dtype=torch.float32)
        want = apply_temperature(logits, t)
        assert torch.allclose(want, TemperatureLogitsWarper(t)(None, logits.clone()))  # reference == peer
        if torch.allclose(got, want):
            continue
        sharper = got.softmax(-1).max(-1).values.mean() > logits.softmax(-1).max(-1).values.mean()
        if t != 1.0 and sharper != (t < 1):
            return f"at T={t} your distribution got {'sharper' if sharper else 'flatter'}: divide the logits by T."
        return f"at T={t} your logits differ from logits / T."
    return None


@_exercise("01.2", "top-k by hand",
          success="your top-k matches ftlib's apply_top_k and Hugging Face's TopKLogitsWarper.",
          hint="torch.topk(logits, k).values[..., -1:] is the k-th largest logit per row; mask what is below it. "
               "k=0: return the logits as they are.")
def _check_top_k(fn: Callable) -> str | None:
    for k in (1, 3, 10):
        logits = _logits()
        got = torch.as_tensor(_call(fn, logits, k), dtype=torch.float32)
        if not torch.equal(logits, _logits()):
            return "your function changed the logits in place: return a new tensor (e.g. with masked_fill)."
        want = apply_top_k(logits, k)
        peer = TopKLogitsWarper(top_k=k)(None, logits.clone())
        assert torch.equal(want, peer)  # the reference and the peer agree, or the check itself is wrong
        if got.shape != want.shape:
            return f"returned shape {tuple(got.shape)}, expected {tuple(want.shape)}: filter every row."
        if ((got == 0) & (want == NEG_INF)).any():
            return "filtered tokens must get -inf, not 0: a logit of 0 still has probability after the softmax."
        kept, want_kept = (got > NEG_INF).sum(-1), (want > NEG_INF).sum(-1)
        if (kept == logits.shape[-1]).all():
            return f"with k={k} you kept all {logits.shape[-1]} tokens: your function ignores top_k."
        if not torch.equal(got, want):
            row = int((kept != want_kept).nonzero()[0]) if (kept != want_kept).any() else 0
            return (f"with k={k}, row {row} keeps {int(kept[row])} tokens where top-k keeps {int(want_kept[row])} "
                    "(tokens tied with the k-th logit are kept too, the others unchanged).")
    row = _logits()[0]
    if not torch.equal(torch.as_tensor(_call(fn, row, 3)), apply_top_k(row, 3)):
        return "a single row of logits ([V], as in the notebook) must work too: use dim=-1 and [..., -1:]."
    try:
        off = torch.equal(torch.as_tensor(_call(fn, _logits(), 0)), _logits())
    except (RuntimeError, IndexError):  # torch.topk(logits, 0) leaves no k-th value to compare with
        off = False
    if not off:
        return "top_k=0 means 'off' (as in generate): return the logits unchanged."
    return None


TOP_P_LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, -2.0]


@_exercise("01.3", "predict: top-p after temperature",
          success="the hotter the distribution, the more tokens top-p needs to cover p.",
          hint="Apply the temperature, softmax, sort descending, and count tokens until the running sum reaches 0.9.")
def _check_top_p_prediction(answer: dict) -> str | None:
    logits = torch.tensor(TOP_P_LOGITS)
    for t in (0.5, 1.0, 2.0):
        want = int((apply_top_p(apply_temperature(logits, t), 0.9) > NEG_INF).sum())
        got = answer.get(t) if isinstance(answer, dict) else None
        if got is None or got is ...:
            return f"give a count for every temperature, as {{0.5: n, 1.0: n, 2.0: n}}; T={t} is missing."
        if got != want:
            return (f"at T={t} top-p 0.9 keeps {'more' if want > got else 'fewer'} tokens than {got}: "
                    f"{'a higher' if want > got else 'a lower'} temperature spreads the probability "
                    f"{'wider' if want > got else 'less'} than you assumed.")
    return None


# ---------------------------------------------------------------- 02 · base vs instruct
@_exercise("02.1", "the instruct model's chat prompt", success="your prompt is exactly what apply_chat_template "
          "renders, generation prompt included.",
          hint="ChatML: '<|im_start|>role\\ncontent<|im_end|>\\n' per turn, SmolLM2's default system turn first, "
               "and '<|im_start|>assistant\\n' at the end.")
def _check_chat_prompt(fn: Callable) -> str | None:
    tok = _smollm2()
    for question in ("Give me one tip for staying focused.", "What is 2 + 2?"):
        want = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
        got = _call(fn, question)
        if got == want:
            continue
        if not isinstance(got, str):
            return f"return the prompt as a string, got {type(got).__name__}."
        if want.startswith(got):
            return ("your prompt stops before '<|im_start|>assistant\\n', the generation prompt: "
                    "without it the model does not know it is its turn.")
        if "<|im_start|>system" not in got:
            return "SmolLM2's template adds a default system turn when the chat has none; yours has none."
        return _first_diff(got, want) + "."
    return None


@_exercise("02.2", "predict: the instruct model's stop token", success="<|im_end|> ends a turn and the generation.",
          hint="Look at the chat prompt: which special token closes every turn?")
def _check_stop_id(answer: Any) -> str | None:
    tok = _smollm2()
    if not isinstance(answer, int):
        return f"give the token id as an int (e.g. tok.convert_tokens_to_ids(...)), got {type(answer).__name__}."
    if answer == tok.eos_token_id:
        return None
    name = tok.convert_ids_to_tokens(answer) if 0 <= answer < len(tok) else None
    why = {"<|endoftext|>": "it ends a pretraining document, not a chat turn",
           "<|im_start|>": "it *opens* a turn; the model would stop just as the next one begins"}
    return f"id {answer} is {name!r}: {why.get(name, 'not the token that closes a turn')}."


# ---------------------------------------------------------------- 03 · Alpaca samples
@_exercise("03.1", "labels for an instruction sample",
          success="prompt masked, response and EOS trained: the model learns the answer and to stop.",
          hint="input_ids = prompt + response + [eos]; labels: -100 for every prompt token, the ids themselves after.")
def _check_instruction_labels(fn: Callable) -> str | None:
    tok = _smollm2()
    record = {"instruction": "Name a primary colour.", "input": "", "output": "Blue."}
    prompt, response = format_alpaca(record)
    p, r = tok(prompt).input_ids, tok(response, add_special_tokens=False).input_ids
    want = tokenise_instruction(record, tok)
    ids, labels = (list(map(int, x)) for x in _call(fn, p, r, tok.eos_token_id))
    if ids != want["input_ids"]:
        return ("input_ids must be prompt + response + [eos]" + ("; yours lack the final EOS."
                if ids == p + r else f", {len(want['input_ids'])} tokens; yours has {len(ids)}."))
    if len(labels) != len(ids):
        return f"labels need one entry per input token ({len(ids)}), got {len(labels)}: the model shifts them itself."
    if labels == want["labels"]:
        return None
    if labels[:-1] == want["labels"][1:] or labels[1:] == want["labels"][:-1]:
        return "your labels are shifted by one: give them at the same positions as input_ids; the model shifts them."
    if labels[-1] == IGNORE:
        return f"position {len(ids) - 1} (the EOS) is -100: the model never learns to stop."
    if labels[:len(p)] == p:
        return "every prompt token is trained: the prompt is given at inference, mask it with -100."
    i = next(i for i, (a, b) in enumerate(zip(labels, want["labels"])) if a != b)
    part = "prompt" if i < len(p) else "response"
    return f"position {i} ({part}) has label {labels[i]}, expected {want['labels'][i]}."


@_exercise("03.2", "fix: mask padding by position",
          success="padding masked by position; every EOS target survives, though pad == eos.",
          hint="The collator knows each sample's length: set labels to -100 from that position on, whatever the id.")
def _check_collate(fn: Callable) -> str | None:
    eos = pad = 2
    samples = [{"input_ids": [1, 50, 51, 52, 2], "labels": [IGNORE, IGNORE, 51, 52, 2]},
               {"input_ids": [1, 60, 61, 2], "labels": [IGNORE, IGNORE, 61, 2]},
               {"input_ids": [1, 70, 71, 72, 73, 74, 2], "labels": [IGNORE, IGNORE, IGNORE, 72, 73, 74, 2]}]
    want = PaddingCollator(pad)(samples)
    got = _call(fn, [dict(s) for s in samples], pad)
    ids, labels = torch.as_tensor(got["input_ids"]), torch.as_tensor(got["labels"])
    if ids.shape != want["input_ids"].shape or not torch.equal(ids, want["input_ids"]):
        return f"input_ids must be right-padded with {pad} to the longest sample: {tuple(want['input_ids'].shape)}."
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        if labels[row, n - 1] != eos:
            return (f"row {row}, position {n - 1} (the EOS) is {int(labels[row, n - 1])}: masking by token id hides "
                    "EOS when pad == eos, and the model never learns to stop; mask by position.")
    if not torch.equal(labels, want["labels"]):
        row, col = (labels != want["labels"]).nonzero()[0].tolist()
        return f"labels[{row}, {col}] is {int(labels[row, col])}, expected {int(want['labels'][row, col])}."
    return None


PADDING_LENGTHS = [100, 900, 120, 880, 110, 950, 95, 905]


def padding_fractions(lengths: list[int], batch_size: int = 4, max_length: int = 1024) -> dict[str, float]:
    """Real-token fraction of pad-to-``max_length``, dynamic padding in the given order, and length-grouped."""
    def dynamic(order: list[int]) -> float:
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        return sum(order) / sum(len(b) * max(b) for b in batches)
    return {"pad": sum(lengths) / (len(lengths) * max_length), "dynamic": dynamic(lengths),
            "grouped": dynamic(sorted(lengths, reverse=True))}


@_exercise("03.3", "predict: how much is padding?",
          success="grouping samples of similar length removes nearly all padding.",
          hint="Per batch of 4, every row is as long as the batch's widest (or 1024): real tokens / rows x width.")
def _check_padding_prediction(answer: dict) -> str | None:
    if not isinstance(answer, dict):
        return "give a dict {'pad': fraction, 'dynamic': fraction, 'grouped': fraction}."
    for name, want in padding_fractions(PADDING_LENGTHS).items():
        got = answer.get(name)
        if got is None or got is ...:
            return f"give a real-token fraction for {name!r} (a number between 0 and 1)."
        if abs(got - want) > 0.01:
            return (f"{name!r}: {got:.2f} is too {'high' if got > want else 'low'} (within 0.01 counts); "
                    "count the width of each batch of 4, in the order given.")
    return None


# ---------------------------------------------------------------- 04 · chat samples
CHAT = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A language model."},
        {"role": "user", "content": "Have a nice day!"}, {"role": "assistant", "content": "You too!"}]


@_exercise("04.1", "fix: a chat template without EOS",
          success="every turn ends with EOS, so a trained model learns to end its turn.",
          hint="Look at what is emitted after each message: the EOS must follow assistant turns too.")
def _check_template(template: str) -> str | None:
    if not isinstance(template, str):
        return f"give the template as a string, got {type(template).__name__}."
    tok = _smollm2()
    text = tok.apply_chat_template(CHAT, chat_template=template, tokenize=False)
    for i, m in enumerate(CHAT):
        at = text.find(m["content"])
        after = text[at + len(m["content"]):].lstrip()
        if m["role"] == "assistant" and at >= 0 and not after.startswith(tok.eos_token):
            return (f"assistant turn {i} is not followed by EOS {tok.eos_token!r}: "
                    "the model never learns to end its turn.")
    for gen in (False, True):
        want = tok.apply_chat_template(CHAT, chat_template=ARTICLE_CHAT_TEMPLATE, tokenize=False,
                                       add_generation_prompt=gen)
        got = tok.apply_chat_template(CHAT, chat_template=template, tokenize=False, add_generation_prompt=gen)
        if got != want:
            return _first_diff(got, want) + (" (with the generation prompt)." if gen else ".")
    return None


SYSTEM_CHAT = [{"role": "system", "content": "Answer briefly."}, *CHAT]


@_exercise("04.2", "assistant spans in a ChatML chat",
          success="each reply with its <|im_end|> is trained; headers, user and system turns are not.",
          hint="Find each '<|im_start|>assistant\\n'; the span starts after it and ends after the next '<|im_end|>'.")
def _check_spans(fn: Callable) -> str | None:
    tok, end = _smollm2(), "<|im_end|>"
    for chat in (CHAT, SYSTEM_CHAT, CHAT[:2]):
        text, want = assistant_char_spans(tok, chat)
        got = [tuple(s) for s in _call(fn, text)]
        if len(got) != len(want):
            return f"found {len(got)} spans, but the chat has {len(want)} assistant turns: find every one."
        for k, ((a, b), (wa, wb)) in enumerate(zip(got, want)):
            if text[a:b] == text[wa:wb]:
                continue
            if b == wb - len(end):
                return f"span {k} ends before '<|im_end|>': the model never learns to end its turn."
            if a < wa and "<|im_start|>assistant" in text[a:wa + 1]:
                return f"span {k} includes the '<|im_start|>assistant' header: it is given at inference, not written."
            return f"span {k} is {text[a:b]!r}, expected {text[wa:wb]!r}."
    return None


@_exercise("04.3", "predict: the cost of the default system prompt",
          success="SmolLM2's template spends these tokens on every chat that has no system turn.",
          hint="Render a chat with the tokenizer's own template, then count the tokens of its first turn.")
def _check_system_tokens(answer: Any) -> str | None:
    tok = _smollm2()
    text = tok.apply_chat_template(CHAT, tokenize=False)
    bare = text[text.index("<|im_start|>user"):]
    want = len(tok(text, add_special_tokens=False).input_ids) - len(tok(bare, add_special_tokens=False).input_ids)
    if not isinstance(answer, int):
        return f"give a number of tokens (an int), got {type(answer).__name__}."
    if answer != want:
        return (f"{answer} is too {'many' if answer > want else 'few'}: count the whole system turn, from "
                "'<|im_start|>' to the newline after '<|im_end|>'.")
    return None
