"""Load the course datasets through `datasets`, normalised to one schema per kind.

instructions: ``instruction, input, output``; chats: ``messages: [{role, content}]``;
preferences: ``messages`` (the context, ending on a user turn), ``chosen``, ``rejected`` (assistant replies).
Offline sources are registry assets; hub profiles read the article's hub datasets.
"""
from __future__ import annotations

import json

import datasets

from ftlib.assets import require
from ftlib.profiles import Profile, get_profile
from ftlib.registry import ASSETS

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
HUB_SPLITS = {"HuggingFaceH4/ultrachat_200k": "train_sft", "HuggingFaceH4/ultrafeedback_binarized": "train_prefs"}


def _source(role: str, profile: Profile | str | None) -> str:
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    return profile.datasets[role]


def _load(source: str, split: str | None = None) -> datasets.Dataset:
    if source in ASSETS:
        return datasets.load_dataset("json", data_files=str(require(source)), split="train")
    return datasets.load_dataset(source, split=split or HUB_SPLITS.get(source, "train"))


def sharegpt_to_messages(turns: list[dict]) -> list[dict]:
    """ShareGPT ``{from, value}`` turns to ``{role, content}`` messages."""
    out = []
    for t in turns:
        if t["from"] not in SHAREGPT_ROLES:
            raise ValueError(f"unknown ShareGPT speaker {t['from']!r}; expected one of {sorted(SHAREGPT_ROLES)}")
        out.append({"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]})
    return out


def load_instructions(profile: Profile | str | None = None, role: str = "alpaca") -> datasets.Dataset:
    """Alpaca-style rows (instruction/input/output)."""
    ds = _load(_source(role, profile))
    keep = ["instruction", "input", "output"]
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def load_identity(name: str, author: str, profile: Profile | str | None = None) -> datasets.Dataset:
    """The identity rows with their ``{{name}}``/``{{author}}`` placeholders filled in."""
    ds = load_instructions(profile, role="identity")

    def fill(row):
        return {k: row[k].replace("{{name}}", name).replace("{{author}}", author) for k in ("instruction", "input", "output")}

    return ds.map(fill)


def load_chats(profile: Profile | str | None = None) -> datasets.Dataset:
    """Multi-turn chats as ``messages``."""
    ds = _load(_source("chat", profile))
    if "conversations" in ds.column_names:
        ds = ds.map(lambda row: {"messages": sharegpt_to_messages(row["conversations"])})
    return ds.select_columns(["messages"])


def load_preferences(profile: Profile | str | None = None) -> datasets.Dataset:
    """Preference pairs: context ``messages`` plus ``chosen``/``rejected`` assistant replies (strings)."""
    ds = _load(_source("preference", profile))
    if "conversations" in ds.column_names:  # LLaMA-Factory's ShareGPT-style DPO file
        ds = ds.map(lambda r: {"messages": sharegpt_to_messages(r["conversations"]),
                               "chosen": r["chosen"]["value"], "rejected": r["rejected"]["value"]},
                    remove_columns=ds.column_names)
    else:  # ultrafeedback_binarized: chosen/rejected are whole chats ending with the assistant reply
        ds = ds.map(lambda r: {"messages": r["chosen"][:-1], "chosen": r["chosen"][-1]["content"],
                               "rejected": r["rejected"][-1]["content"]}, remove_columns=ds.column_names)
    return ds


def load_questions(profile: Profile | str | None = None) -> list[dict]:
    """MT-Bench's 80 two-turn questions (held-out chat probes)."""
    path = require(_source("questions", profile))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def instructions_to_chats(ds: datasets.Dataset) -> datasets.Dataset:
    """Alpaca rows as one-exchange chats (user: instruction + input, assistant: output), for chat models."""
    def to_messages(row):
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}

    return ds.map(to_messages, remove_columns=ds.column_names)
