"""Preference pairs a learner can see in the replies: *answer, then stop* preferred over *answer, then ramble on*.

Notebook 05's model mostly answers and stops, but some replies run on past the answer until the token limit:
they repeat the answer, or start another task as if it were the next turn. ``stop_pairs`` builds pairs that
teach exactly that difference, from instruction records with short reference answers:

* **chosen** — the reference answer, nothing more (the chat template closes it with the end token);
* **rejected** — the *same* answer, then more: the answer repeated (kind ``"repeat"``), or the next record's
  instruction and answer run on as if the model wrote the next turn itself (kind ``"next-task"``); or the answer
  cut short, its first half closed by the end token (kind ``"cut-short"``).

The two replies share their start, so what tells them apart is where the end token comes: right after the answer
(chosen), later, or too early. The third kind matters: with only the first two, "end the reply" is the cheapest
way to win every pair, and a few steps of DPO teach the model to answer with nothing at all. Together they ask
for the end token *exactly* after the answer, a preference one can read off the replies (stop rate, length,
repetition) without a judge. The pairs are made deterministically: the same records give the same pairs anywhere.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

KINDS = ("repeat", "next-task", "cut-short")


def ramble(answer: str, kind: str, next_record: dict | None = None) -> str:
    """The answer, then what a model that does not stop writes next: the answer twice more (``"repeat"``), or
    another task's instruction and answer (``"next-task"``, needs ``next_record``); or the answer's first half
    of words (``"cut-short"``, for answers of two words or more)."""
    answer = answer.strip()
    if kind == "cut-short":
        words = answer.split(" ")
        if len(words) < 2:
            raise ValueError(f"a one-word answer cannot be cut short: {answer!r}")
        return " ".join(words[:len(words) // 2])
    if kind == "repeat":
        return "\n".join([answer] * 3)
    if kind == "next-task":
        if next_record is None:
            raise ValueError("kind 'next-task' needs next_record, the record whose task the reply runs on into")
        return f"{answer}\n{user_turn(next_record)}\n{next_record['output'].strip()}"
    raise ValueError(f"unknown ramble kind {kind!r}; choose one of {KINDS}")


def user_turn(record: dict) -> str:
    """The user's message for an instruction record: the instruction, and its input after a blank line (as
    ``ftlib.mixture`` renders them for SFT)."""
    return record["instruction"].strip() + (f"\n\n{record['input'].strip()}" if record.get("input") else "")


def short_answer_records(records: Sequence[dict], max_answer_chars: int = 120,
                         exclude: Collection[str] = ()) -> list[dict]:
    """Records (instruction, input, output) whose answer has at most ``max_answer_chars``: the short answers a
    preference for stopping is easiest to see on. A record whose user turn (``user_turn``) is in ``exclude``
    (e.g. one the SFT run trained on or holds out) is skipped, and so is a repeat."""
    if max_answer_chars <= 0:
        raise ValueError(f"max_answer_chars must be positive, got {max_answer_chars}")
    seen, kept = set(exclude), []
    for r in records:
        user, answer = user_turn(r), r["output"].strip()
        if not answer or len(answer) > max_answer_chars or user in seen:
            continue
        seen.add(user)
        kept.append(r)
    return kept


def stop_pairs(records: Sequence[dict], n_pairs: int | None = None, max_answer_chars: int = 120,
               exclude: Collection[str] = ()) -> datasets.Dataset:
    """Preference pairs (``messages``, ``chosen``, ``rejected``, ``kind``) from the short-answer records among
    ``records`` (see ``short_answer_records``), in their order; the kinds take turns (repeat, next-task,
    cut-short, repeat, ...), except that a one-word answer, which cannot be cut short, gets "repeat" instead.
    ``n_pairs``: at most this many."""
    import datasets

    usable = short_answer_records(records, max_answer_chars, exclude)
    if n_pairs is not None:
        if n_pairs <= 0:
            raise ValueError(f"n_pairs must be positive, got {n_pairs}")
        usable = usable[:n_pairs + 1]  # one more: the last pair's next-task continuation
    if len(usable) < 2:
        raise ValueError(f"only {len(usable)} record(s) have an answer of at most {max_answer_chars} "
                         "characters; pass more records or raise max_answer_chars")
    rows = []
    for i, record in enumerate(usable[:n_pairs] if n_pairs is not None else usable):
        kind = KINDS[i % len(KINDS)]
        if kind == "cut-short" and len(record["output"].strip().split(" ")) < 2:
            kind = "repeat"
        following = usable[(i + 1) % len(usable)]
        rows.append({"messages": [{"role": "user", "content": user_turn(record)}],
                     "chosen": record["output"].strip(),
                     "rejected": ramble(record["output"], kind, following), "kind": kind})
    return datasets.Dataset.from_list(rows)
