"""The SFT mixture of notebook 05: instructions, multi-turn chats and identity records, as one chat dataset.

The article fine-tunes on Alpaca (single instructions) and on UltraChat (multi-turn chats). Here both become
``messages`` records so that one chat template renders all of them and the model learns one format:

* Alpaca instructions as one-exchange chats, and a few chained into two- or three-exchange chats (a follow-up
  question that has nothing to do with the first is still a new user turn the model must answer);
* multi-turn chats: offline, the chats shipped with FastChat, which all teach an identity ("I am Vicuna, trained by
  LMSYS") — we rename the assistant, so they teach *our* identity instead; on the hub, UltraChat 200k;
* the identity records, so that "Who are you?" has a right answer.

Held out before anything is mixed: instructions for the before/after generations and records for the eval loss.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftlib.config import option, validate
from ftlib.profiles import Profile, activate

if TYPE_CHECKING:  # imported when a mixture is built: a config (ftlib.sft's fast checks) must not pay for it
    import datasets

# FastChat's identity chats name their assistant; these patterns turn it into ours.
_RENAMES = [(re.compile(r"Large Model Systems Organization \(LMSYS\)"), "{author}"),
            (re.compile(r"\bLMSYS\b"), "{author}"), (re.compile(r"\bVicuna\b"), "{name}")]


@dataclass(frozen=True)
class MixtureConfig:
    """How many records of each kind; validated when built."""

    instructions: int = option(240, "Alpaca records as single-turn chats", ge=0)
    chained: int = option(40, "two- and three-exchange chats made of further Alpaca records", ge=0)
    chats: int = option(120, "multi-turn chats (renamed FastChat chats offline, UltraChat on the hub)", ge=0)
    identity_repeats: int = option(2, "the identity records, this many times each", ge=0)
    test_instructions: int = option(16, "held out: the before/after generations", ge=0)
    eval_records: int = option(24, "held out: the eval loss (instructions, as chats)", ge=0)
    max_output_chars: int = option(600, "instructions whose answer is longer are skipped (rows are short on a "
                                        "CPU)", ge=0)
    test_max_output_chars: int = option(240, "held-out instructions have short reference answers: a reply can "
                                             "end in time", ge=0)
    seed: int = option(0, "order of the records and of the held-out split")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Mixture:
    train: datasets.Dataset  # messages, plus ``source`` (instruction | chained | chat | identity)
    eval: datasets.Dataset  # messages: held-out instructions for the eval loss
    test: list[dict]  # held-out Alpaca records (instruction/input/output) for generations
    unused: list[dict] = dataclasses.field(default_factory=list)  # Alpaca records the mixture left out (08's pairs)


def rename_assistant(text: str, name: str, author: str) -> str:
    """FastChat's "Vicuna ... by LMSYS" becomes "<name> ... by <author>"."""
    for pattern, repl in _RENAMES:
        text = pattern.sub(repl.format(name=name, author=author), text)
    return text


def _as_chat(record: dict) -> list[dict]:
    user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def build_mixture(cfg: MixtureConfig = MixtureConfig(), profile: Profile | str | None = None, name: str = "Ada",
                  author: str = "the ftlib course") -> Mixture:
    """Split, convert and mix; the same config and profile always give the same records in the same order."""
    import datasets

    from ftlib import data as ftdata

    profile = activate(profile)
    rng = random.Random(cfg.seed)
    alpaca = [r for r in ftdata.load_instructions(profile) if len(r["output"]) <= cfg.max_output_chars]
    rng.shuffle(alpaca)
    # held-out instructions first: no input, so the prompt is one plain question or request
    test = [r for r in alpaca if not r["input"] and len(r["output"]) <= cfg.test_max_output_chars]
    test = test[:cfg.test_instructions]
    rest = [r for r in alpaca if not any(r is t for t in test)]
    evals, rest = rest[:cfg.eval_records], rest[cfg.eval_records:]
    need = cfg.instructions + 2 * cfg.chained + cfg.chained // 2  # chained chats use 2 or 3 records
    if len(rest) < need:
        raise ValueError(f"the instruction data has {len(rest)} usable records after the held-out ones; "
                         f"the mixture needs {need}: lower MixtureConfig.instructions or .chained")
    rows = [{"messages": _as_chat(r), "source": "instruction"} for r in rest[:cfg.instructions]]
    pool = rest[cfg.instructions:]
    for i in range(cfg.chained):
        turns = 2 + i % 2
        picked, pool = pool[:turns], pool[turns:]  # what is left of the pool at the end: unused
        rows.append({"messages": [m for r in picked for m in _as_chat(r)], "source": "chained"})
    chats = ftdata.load_chats(profile)
    order = list(range(len(chats)))
    rng.shuffle(order)
    for i in order[:cfg.chats]:
        messages = [{"role": m["role"], "content": rename_assistant(m["content"], name, author)
                     if profile.offline else m["content"]}
                    for m in chats[i]["messages"] if m["role"] in ("user", "assistant")]
        rows.append({"messages": messages, "source": "chat"})
    identity = ftdata.load_identity(name, author, profile)
    english = [r for r in identity if r["instruction"].isascii()]  # the file also has Chinese records
    rows += [{"messages": _as_chat(r), "source": "identity"} for r in english] * cfg.identity_repeats
    rng.shuffle(rows)
    eval_ds = datasets.Dataset.from_list([{"messages": _as_chat(r)} for r in evals])
    return Mixture(train=datasets.Dataset.from_list(rows), eval=eval_ds, test=test, unused=pool)
