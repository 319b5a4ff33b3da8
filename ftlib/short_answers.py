"""Does the model know the answer? A short-answer set written for the course, and a rule anyone can check.

Stop rate and reply length (``ftlib.evaluate``) measure the *form* of the replies; this module measures their
*content* on 60 questions with short, unambiguous answers (capitals, small sums, plurals, common words in French,
Spanish and German, one-line tasks), in ``ftlib/evalsets/short_answers.json``. Half are ``dev`` (use them to
choose a training recipe), half ``test`` (report only). None of them is in the course's training data (a test
checks). The scoring rule is ``RULE`` below, in plain words.

Run a model on a split in one of two modes: ``chat`` (the tokenizer's chat template) or ``few-shot`` (a plain-text
Question/Answer prompt with five solved examples: what a *base* model knows, without any chat format).
Command line: ``python -m ftlib.short_answers --model base --mode few-shot --split dev``.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources

from ftlib.evaluate import repeats_ngram  # noqa: F401  (also this module's: 05 imports it from here)
from ftlib.generation import Generation

RULE = """\
A reply is RIGHT when its first line contains one of the accepted answers as whole words.
Both sides are normalised first: lower case, punctuation turned into spaces (accents are kept),
runs of spaces made one, and a leading "a", "an" or "the" dropped.
  * Only the first non-blank line counts: an answer on a later line is ignored.
  * Whole words: for 7 + 5, "12" and "7 + 5 = 12." are right; "112" and "1 2" are wrong.
  * The rule reads no meaning: "Paris is not the capital" counts as right for France, and a reply that
    lists several guesses is right if one of them is. Read the replies too - the count is a summary.
In few-shot mode the answer ends at the first newline (the next line would be the model inventing the next
question), so there "stopped" means: it wrote a newline or its end token before the token limit."""

REFERENCE_RULE = """\
A held-out instruction's reference answer of at most 4 words (normalised) is checked like a short answer:
RIGHT if it appears as whole words in the reply's first line, else WRONG. A longer or open-ended reference
("Write a poem ...") has no single right wording: CAN'T TELL - read those replies yourself."""

SPLITS = ("dev", "test", "all")
MODES = ("chat", "few-shot")
MAX_NEW_TOKENS = 32  # every model, every mode: short answers need a few tokens; ramblers are cut here
_ARTICLES = ("a", "an", "the")
_NOT_WORD = re.compile(r"[^\w\s]|_")


# ---------------------------------------------------------------- the set
def _load_file() -> dict:
    return json.loads(resources.files("ftlib").joinpath("evalsets/short_answers.json").read_text("utf-8"))


def load_short_answers(split: str = "dev") -> list[dict]:
    """The items of one split ("dev", "test" or "all"): dicts with id, category, question, answers, split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    items = _load_file()["items"]
    return [item for item in items if split == "all" or item["split"] == split]


def load_shots() -> list[dict]:
    """The few-shot examples (question, answer): not questions of the set."""
    return _load_file()["shots"]


# ---------------------------------------------------------------- the rule
def normalise(text: str) -> str:
    """Lower case, punctuation to spaces (accents kept), one space between words, no leading a/an/the."""
    words = _NOT_WORD.sub(" ", text.lower()).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def first_line(reply: str) -> str:
    """The reply's first non-blank line."""
    for line in reply.splitlines():
        if line.strip():
            return line
    return ""


def contains_words(text: str, phrase: str) -> bool:
    """Whether normalised ``phrase`` occurs in normalised ``text`` as whole words."""
    phrase = normalise(phrase)
    return bool(phrase) and f" {phrase} " in f" {normalise(text)} "


def is_right(reply: str, answers: Sequence[str]) -> bool:
    """``RULE``: the reply's first line contains an accepted answer as whole words, both normalised."""
    line = first_line(reply)
    return any(contains_words(line, answer) for answer in answers)


# ---------------------------------------------------------------- scores
def score_replies(replies: Sequence[Generation], items: Sequence[dict]) -> dict:
    """Right answers and the form of the replies: right, n, stop_rate, median_length (tokens), repetition_rate,
    plus ``by_category`` ({category: [right, n]}) and ``right_ids``."""
    if len(replies) != len(items) or not items:
        raise ValueError(f"need one reply per item, got {len(replies)} replies for {len(items)} items")
    right = [is_right(r.text, item["answers"]) for r, item in zip(replies, items)]
    by_category: dict[str, list[int]] = {}
    for ok, item in zip(right, items):
        tally = by_category.setdefault(item["category"], [0, 0])
        tally[0] += ok
        tally[1] += 1
    lengths = [len(r.token_ids) - (r.finish_reason == "eos") for r in replies]
    return {"right": sum(right), "n": len(items),
            "stop_rate": sum(r.finish_reason != "length" for r in replies) / len(replies),
            "median_length": float(statistics.median(lengths)),
            "repetition_rate": sum(repeats_ngram(r.token_ids) for r in replies) / len(replies),
            "by_category": by_category, "right_ids": [item["id"] for ok, item in zip(right, items) if ok]}


def reference_tally(replies: Sequence[str], references: Sequence[str],
                    max_words: int = 4) -> tuple[list[str], dict[str, int]]:
    """``REFERENCE_RULE``: "right" / "wrong" / "can't tell" per reply, and the counts of each."""
    if len(replies) != len(references):
        raise ValueError(f"need one reply per reference, got {len(replies)} and {len(references)}")
    labels = []
    for reply, reference in zip(replies, references):
        if not normalise(reference) or len(normalise(reference).split()) > max_words:
            labels.append("can't tell")
        else:
            labels.append("right" if is_right(reply, [reference]) else "wrong")
    counts = Counter(labels)
    return labels, {key: counts[key] for key in ("right", "wrong", "can't tell")}


# ---------------------------------------------------------------- running a model
def few_shot_prompt(question: str, shots: Sequence[dict] | None = None) -> str:
    """A plain-text prompt for a base model: solved "Question: ...\\nAnswer: ..." blocks, then the question."""
    shots = load_shots() if shots is None else shots
    solved = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return f"{solved}Question: {question}\nAnswer:"


def chat_prompt(tokenizer, question: str) -> str:
    """The question as one user turn in the tokenizer's chat template, ready for the assistant's reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template: set tokenizer.chat_template (e.g. "
                         "ftlib.templates.ARTICLE_CHAT_TEMPLATE) or use mode='few-shot'")
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


def run_short_answers(model, tokenizer, items: Sequence[dict], mode: str = "chat",
                      max_new_tokens: int = MAX_NEW_TOKENS, cache=None) -> tuple[list[Generation], dict]:
    """Greedy replies to ``items`` in one batch, and their ``score_replies``; ``seconds`` is the wall time.

    ``cache`` (a ``ftlib.reply_cache.ReplyCache``, chat mode only): replies this model already gave are read back.
    """
    from ftlib.evaluate import generate_replies
    from ftlib.generation import generate

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if cache is not None and mode != "chat":
        raise ValueError("a reply cache serves chat-mode replies only (few-shot replies end at a stop string)")
    started = time.perf_counter()
    questions = [item["question"] for item in items]
    if mode == "chat":  # the template holds BOS; the end token stops a reply
        prompts = [chat_prompt(tokenizer, q) for q in questions]
        replies = generate_replies(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=len(prompts), add_special_tokens=False, cache=cache).replies
    else:  # the answer ends at the first newline (or the end token)
        prompts = [few_shot_prompt(q) for q in questions]
        replies = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=False,
                           stop_strings=["\n"], return_details=True)
    scores = score_replies(replies, items)
    scores["seconds"] = time.perf_counter() - started
    return replies, scores


def table_row(name: str, mode: str, split: str, scores: dict) -> str:
    """One line of the results table."""
    return (f"{name:<28} {mode:<8} {split:<4} right {scores['right']:>2}/{scores['n']:<2}  "
            f"stop {scores['stop_rate']:>4.0%}  median length {scores['median_length']:>4.1f}  "
            f"repeating {scores['repetition_rate']:>4.0%}  {scores['seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """``python -m ftlib.short_answers --model ROLE_OR_PATH [--mode chat|few-shot] [--split dev|test|all]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ftlib.short_answers", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a role (base, instruct), an asset name or a model folder")
    parser.add_argument("--mode", choices=MODES, default="chat")
    parser.add_argument("--split", choices=SPLITS, default="dev")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--by-category", action="store_true", help="also print right/n per category")
    args = parser.parse_args(argv)
    from ftlib.models import load_model
    from ftlib.templates import ARTICLE_CHAT_TEMPLATE

    try:
        model, tokenizer = load_model(args.model)
    except (OSError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.mode == "chat" and not tokenizer.chat_template:
        tokenizer.chat_template = ARTICLE_CHAT_TEMPLATE  # a base model: the format notebook 05 teaches
    _, scores = run_short_answers(model, tokenizer, load_short_answers(args.split), args.mode, args.max_new_tokens)
    print(table_row(args.model, args.mode, args.split, scores))
    if args.by_category:
        print("  " + ", ".join(f"{c} {r}/{n}" for c, (r, n) in scores["by_category"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
