"""Checks for the exercises of notebooks 00-02 (see ``ftlib.course.exercises``): set-up, sampling, the chat prompt.

Each check is cheap and deterministic: small hand-made tensors, or the offline SmolLM2 tokenizer (loaded once, in
a fraction of a second). None loads a model, so a verdict is the same on every machine. Worked solutions are in
``notebooks/solutions/NN_solutions.ipynb``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper

from ftlib.course.exercises.core import call, register
from ftlib.course.exercises.shared import first_diff, smollm2
from ftlib.sampling import apply_temperature, apply_top_k, apply_top_p

NEG_INF = float("-inf")


# ---------------------------------------------------------------- 00 · set-up
@register("00.1", "keep only the generated tokens", success="generate returns prompt + answer; you kept the answer.",
          hint="`generate` returns the prompt's ids followed by the new ones: slice from the prompt's length on.")
def _check_answer_ids(fn: Callable) -> str | None:
    prompt = torch.tensor([[5, 6, 7, 8]])
    out = torch.tensor([[5, 6, 7, 8, 40, 41, 2]])
    got = call(fn, out, prompt)
    got = torch.as_tensor(got).reshape(-1)
    if got.tolist() == [40, 41, 2]:
        return None
    if got.numel() >= 7:
        return "your ids still start with the 4 prompt tokens: slice `out[0]` from `input_ids.shape[1]` on."
    if got.tolist() == [40, 41]:
        return "you dropped the last token, the EOS: keep it, it is how you see that the model stopped by itself."
    return f"for a 4-token prompt and output {out[0].tolist()} you returned {got.tolist()}, expected [40, 41, 2]."


@register("00.2", "why did generation stop?", success="a reply ending in EOS stopped by itself, even at the limit.",
          hint="Look at the last token only: EOS means the model chose to stop, anything else means the limit.")
def _check_finish_reason(fn: Callable) -> str | None:
    cases = [([30, 31, 2], 2, 20, "eos"), ([30, 31, 32], 2, 3, "length"), ([30, 31, 2], 2, 3, "eos"),
             ([30, 2, 31, 32], 2, 4, "length"), ([30, 31, 1], 1, 20, "eos")]
    for ids, eos, limit, want in cases:
        got = call(fn, ids, eos, limit)
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


@register("01.1", "temperature by hand",
          success="your temperature matches ftlib's apply_temperature and Hugging Face's TemperatureLogitsWarper.",
          hint="Divide the logits by the temperature: below 1 the gaps between logits grow, above 1 they shrink.")
def _check_temperature(fn: Callable) -> str | None:
    for t in (0.5, 1.0, 1.5):
        logits = _logits()
        got = torch.as_tensor(call(fn, logits, t), dtype=torch.float32)
        want = apply_temperature(logits, t)
        assert torch.allclose(want, TemperatureLogitsWarper(t)(None, logits.clone()))  # reference == peer
        if torch.allclose(got, want):
            continue
        sharper = got.softmax(-1).max(-1).values.mean() > logits.softmax(-1).max(-1).values.mean()
        if t != 1.0 and sharper != (t < 1):
            return f"at T={t} your distribution got {'sharper' if sharper else 'flatter'}: divide the logits by T."
        return f"at T={t} your logits differ from logits / T."
    return None


@register("01.2", "top-k by hand",
          success="your top-k matches ftlib's apply_top_k and Hugging Face's TopKLogitsWarper.",
          hint="torch.topk(logits, k).values[..., -1:] is the k-th largest logit per row; mask what is below it. "
               "k=0: return the logits as they are.")
def _check_top_k(fn: Callable) -> str | None:
    for k in (1, 3, 10):
        logits = _logits()
        got = torch.as_tensor(call(fn, logits, k), dtype=torch.float32)
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
    if not torch.equal(torch.as_tensor(call(fn, row, 3)), apply_top_k(row, 3)):
        return "a single row of logits ([V], as in the notebook) must work too: use dim=-1 and [..., -1:]."
    try:
        off = torch.equal(torch.as_tensor(call(fn, _logits(), 0)), _logits())
    except (RuntimeError, IndexError):  # torch.topk(logits, 0) leaves no k-th value to compare with
        off = False
    if not off:
        return "top_k=0 means 'off' (as in generate): return the logits unchanged."
    return None


TOP_P_LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0, -2.0]


@register("01.3", "predict: top-p after temperature",
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
@register("02.1", "the instruct model's chat prompt", success="your prompt is exactly what apply_chat_template "
          "renders, generation prompt included.",
          hint="ChatML: '<|im_start|>role\\ncontent<|im_end|>\\n' per turn, SmolLM2's default system turn first, "
               "and '<|im_start|>assistant\\n' at the end.")
def _check_chat_prompt(fn: Callable) -> str | None:
    tok = smollm2()
    for question in ("Give me one tip for staying focused.", "What is 2 + 2?"):
        want = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
        got = call(fn, question)
        if got == want:
            continue
        if not isinstance(got, str):
            return f"return the prompt as a string, got {type(got).__name__}."
        if want.startswith(got):
            return ("your prompt stops before '<|im_start|>assistant\\n', the generation prompt: "
                    "without it the model does not know it is its turn.")
        if "<|im_start|>system" not in got:
            return "SmolLM2's template adds a default system turn when the chat has none; yours has none."
        return first_diff(got, want) + "."
    return None


@register("02.2", "predict: the instruct model's stop token", success="<|im_end|> ends a turn and the generation.",
          hint="Look at the chat prompt: which special token closes every turn?")
def _check_stop_id(answer: Any) -> str | None:
    tok = smollm2()
    if not isinstance(answer, int):
        return f"give the token id as an int (e.g. tok.convert_tokens_to_ids(...)), got {type(answer).__name__}."
    if answer == tok.eos_token_id:
        return None
    name = tok.convert_ids_to_tokens(answer) if 0 <= answer < len(tok) else None
    why = {"<|endoftext|>": "it ends a pretraining document, not a chat turn",
           "<|im_start|>": "it *opens* a turn; the model would stop just as the next one begins"}
    return f"id {answer} is {name!r}: {why.get(name, 'not the token that closes a turn')}."
