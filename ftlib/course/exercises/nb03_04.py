"""Checks for the exercises of notebooks 03-04 (see ``ftlib.course.exercises``): instruction samples, padding,
chat masks.

Each check is cheap and deterministic: small hand-made tensors, or the offline SmolLM2 tokenizer (loaded once, in
a fraction of a second). None loads a model, so a verdict is the same on every machine. Worked solutions are in
``notebooks/solutions/NN_solutions.ipynb``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ftlib.batching import PaddingCollator
from ftlib.course.exercises.core import call, register
from ftlib.course.exercises.shared import first_diff, smollm2
from ftlib.samples import assistant_char_spans, tokenise_instruction
from ftlib.templates import ARTICLE_CHAT_TEMPLATE, format_alpaca

IGNORE = -100


# ---------------------------------------------------------------- 03 · Alpaca samples
@register("03.1", "labels for an instruction sample",
          success="prompt masked, response and EOS trained: the model learns the answer and to stop.",
          hint="input_ids = prompt + response + [eos]; labels: -100 for every prompt token, the ids themselves after.")
def _check_instruction_labels(fn: Callable) -> str | None:
    tok = smollm2()
    record = {"instruction": "Name a primary colour.", "input": "", "output": "Blue."}
    prompt, response = format_alpaca(record)
    p, r = tok(prompt).input_ids, tok(response, add_special_tokens=False).input_ids
    want = tokenise_instruction(record, tok)
    ids, labels = (list(map(int, x)) for x in call(fn, p, r, tok.eos_token_id))
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


@register("03.2", "fix: mask padding by position",
          success="padding masked by position; every EOS target survives, though pad == eos.",
          hint="The collator knows each sample's length: set labels to -100 from that position on, whatever the id.")
def _check_collate(fn: Callable) -> str | None:
    eos = pad = 2
    samples = [{"input_ids": [1, 50, 51, 52, 2], "labels": [IGNORE, IGNORE, 51, 52, 2]},
               {"input_ids": [1, 60, 61, 2], "labels": [IGNORE, IGNORE, 61, 2]},
               {"input_ids": [1, 70, 71, 72, 73, 74, 2], "labels": [IGNORE, IGNORE, IGNORE, 72, 73, 74, 2]}]
    want = PaddingCollator(pad)(samples)
    got = call(fn, [dict(s) for s in samples], pad)
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


@register("03.3", "predict: how much is padding?",
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


@register("04.1", "fix: a chat template without EOS",
          success="every turn ends with EOS, so a trained model learns to end its turn.",
          hint="Look at what is emitted after each message: the EOS must follow assistant turns too.")
def _check_template(template: str) -> str | None:
    if not isinstance(template, str):
        return f"give the template as a string, got {type(template).__name__}."
    tok = smollm2()
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
            return first_diff(got, want) + (" (with the generation prompt)." if gen else ".")
    return None


SYSTEM_CHAT = [{"role": "system", "content": "Answer briefly."}, *CHAT]


@register("04.2", "assistant spans in a ChatML chat",
          success="each reply with its <|im_end|> is trained; headers, user and system turns are not.",
          hint="Find each '<|im_start|>assistant\\n'; the span starts after it and ends after the next '<|im_end|>'.")
def _check_spans(fn: Callable) -> str | None:
    tok, end = smollm2(), "<|im_end|>"
    for chat in (CHAT, SYSTEM_CHAT, CHAT[:2]):
        text, want = assistant_char_spans(tok, chat)
        got = [tuple(s) for s in call(fn, text)]
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


@register("04.3", "predict: the cost of the default system prompt",
          success="SmolLM2's template spends these tokens on every chat that has no system turn.",
          hint="Render a chat with the tokenizer's own template, then count the tokens of its first turn.")
def _check_system_tokens(answer: Any) -> str | None:
    tok = smollm2()
    text = tok.apply_chat_template(CHAT, tokenize=False)
    bare = text[text.index("<|im_start|>user"):]
    want = len(tok(text, add_special_tokens=False).input_ids) - len(tok(bare, add_special_tokens=False).input_ids)
    if not isinstance(answer, int):
        return f"give a number of tokens (an int), got {type(answer).__name__}."
    if answer != want:
        return (f"{answer} is too {'many' if answer > want else 'few'}: count the whole system turn, from "
                "'<|im_start|>' to the newline after '<|im_end|>'.")
    return None
