"""Checks for the exercises of notebooks 05-06 (SFT, chat); see ``ftlib.course.exercises``.

Each check runs the learner's answer on small fixed tensors or a tiny random model (``ftlib.tiny``) and compares
it with a peer: Hugging Face's own loss, the chat template, ftlib's tested evaluation code. A known mistake gets
its own sentence (what is wrong, and why it matters); anything else gets the numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ftlib.course.exercises.core import NOT_YET, call, register
from ftlib.course.exercises.shared import close, known_mistake, number, tiny_batch


# ---------------------------------------------------------------- 05 · SFT
@register("05.1", "the shifted cross-entropy over trained tokens",
          hint="token t predicts token t + 1: drop the last position's logits and the first label, flatten both, "
               "and F.cross_entropy skips label -100 and averages over the trained tokens for you",
          success="your loss equals Hugging Face's model(input_ids, labels=labels).loss on the same batch.")
def _shifted_loss(fn) -> str | None:
    model, ids, labels, logits = tiny_batch()
    got = call(fn, logits.clone(), labels.clone(), unanswered=NOT_YET)
    value = number(got)
    if value is None:
        return f"return one number (the mean loss), not {type(got).__name__} {tuple(getattr(got, 'shape', ()))}"
    with torch.no_grad():
        expected = float(model(input_ids=ids, labels=labels).loss)  # the peer: HF shifts and masks the same way
    if close(value, expected):
        return None
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="none")
    unshifted = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    return known_mistake(value, {
        "you scored each position against its own token: position t must predict label t + 1, so drop the last "
        "logit and the first label": float(unshifted),
        "you averaged over every position, the -100 ones included: divide by the number of trained tokens only":
            float(per_token.mean()),
        "you returned the sum over the trained tokens; the loss is their mean": float(per_token.sum()),
    }) or f"your loss is {value:.4f}; Hugging Face's model(input_ids, labels=labels).loss is {expected:.4f}"


@register("05.2", "token-weighted loss across gradient-accumulation micro-batches",
          hint="one big batch averages over all its trained tokens: divide each micro-batch's *sum* by the step's "
               "total token count, so the gradients added up by backward() are those of the big batch",
          success="the micro-batch losses add up to the mean over all the step's trained tokens, as one big batch.")
def _accumulation(fn) -> str | None:
    sums, counts = [30.0, 2.0, 12.0], [10, 1, 4]  # per-token losses 3.0, 2.0 and 3.0; 15 trained tokens
    got = call(fn, list(sums), list(counts), unanswered=NOT_YET)
    values = [number(v) for v in got] if isinstance(got, (list, tuple)) else []
    if len(values) != len(sums) or None in values:
        return f"return one loss per micro-batch ({len(sums)} numbers), not {got!r}"
    expected = [s / sum(counts) for s in sums]
    if all(close(v, e) for v, e in zip(values, expected)):
        return None
    if all(close(v, s / n / len(sums)) for v, s, n in zip(values, sums, counts)):
        return ("you weighted every micro-batch equally (the mean of their means), so a token of its 1-token "
                "micro-batch counts 10 times as much as a token of the 10-token one")
    if all(close(v, s / n) for v, s, n in zip(values, sums, counts)):
        return "each micro-batch's full mean is back-propagated, so the step's gradient is 3 times too large"
    return f"your losses add up to {sum(values):.4f}; one big batch of all 15 tokens has mean loss {sum(expected):.4f}"


# ---------------------------------------------------------------- 06 · chat
def _article_prompt(messages: list[dict], bos: str, eos: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    from ftlib.templates import ARTICLE_CHAT_TEMPLATE

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=ARTICLE_CHAT_TEMPLATE,
                                        add_generation_prompt=True, bos_token=bos, eos_token=eos)
    return rendered[0]


@register("06.1", "the next prompt of a chat, in the article's format",
          hint="BOS once, then for every message '<|role|>\\n' + content + '\\n' followed by EOS, and at the end the "
               "open assistant turn '<|assistant|>\\n' (the generation prompt)",
          success="your prompt is exactly what apply_chat_template renders with the article's template.")
def _chat_prompt(fn) -> str | None:
    bos, eos = "<s>", "</s>"
    chat = [{"role": "user", "content": "Hi! Who are you?"}, {"role": "assistant", "content": "I am Ada."},
            {"role": "user", "content": "What is the capital of Japan?"}, {"role": "assistant", "content": "Tokyo."},
            {"role": "user", "content": "And of France?"}]
    for messages in (chat[:1], chat):
        got = call(fn, [dict(m) for m in messages], bos, eos, unanswered=NOT_YET)
        expected = _article_prompt(messages, bos, eos)
        if got == expected:
            continue
        if not isinstance(got, str):
            return f"return the prompt as one string, not {type(got).__name__}"
        if got + "<|assistant|>\n" == expected:
            return "your prompt lacks the open assistant turn '<|assistant|>\\n' at the end, so nothing tells the " \
                   "model that it is its turn to answer"
        if len(messages) > 1 and got == _article_prompt(messages[-1:], bos, eos):
            return "your prompt holds only the newest message: the model remembers nothing between calls, so " \
                   "every prompt re-sends the whole conversation"
        if got == expected.replace(eos, ""):
            return f"your turns are not closed by the end token {eos!r}: the model was trained to see it (and to " \
                   "write it) after every turn"
        if got == expected.replace(bos, "", 1):
            return f"your prompt does not start with the BOS token {bos!r}"
        at = next(i for i in range(len(expected) + 1) if got[i:i + 1] != expected[i:i + 1])
        return f"after {len(messages)} messages your prompt differs from the template's at character {at}: " \
               f"yours has {got[at:at + 20]!r}, the template's {expected[at:at + 20]!r}"
    return None


@register("06.2", "where a generated reply ends",
          hint="walk the generated ids: the first one in stop_ids ends the reply (it is not part of it); "
               "no stop token at all means the reply was cut at the length limit",
          success="your replies end where ftlib.evaluate.reply_length says, with the right finish reason.")
def _reply_end(fn) -> str | None:
    from ftlib.evaluate import reply_length

    cases = [([5, 9, 2, 2, 2], {2}), ([5, 9, 7], {2}), ([2, 2], {2}), ([4, 3, 2, 8, 2], {2, 3}), ([6, 2, 8, 2], {2})]
    for ids, stops in cases:
        got = call(fn, list(ids), set(stops), unanswered=NOT_YET)
        n, stopped = reply_length(ids, stops)  # the peer
        expected = (ids[:n], "eos" if stopped else "length")
        if not (isinstance(got, tuple) and len(got) == 2):
            return f"return a pair (reply ids, finish reason), not {got!r}"
        reply, reason = list(got[0]), got[1]
        if (reply, reason) == expected:
            continue
        if stopped and reply == ids[:n + 1]:
            return "your reply keeps the stop token: it ends the reply but is not part of it"
        if stopped and reply[:n] == ids[:n] and len(reply) > n:
            return f"for {ids} with stops {stops} you cut at a later stop token; the reply ends at the first one " \
                   "(finished rows are padded with the pad id, which is often the end token itself)"
        if reply == expected[0]:
            return f"for {ids} with stops {stops} the finish reason is {expected[1]!r}, not {reason!r}"
        return f"for {ids} with stops {stops} the reply is {expected[0]}, not {reply}"
    return None
