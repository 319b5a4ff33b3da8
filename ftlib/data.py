"""Load the course datasets through `datasets`, normalised to one schema per kind.

instructions: ``instruction, input, output``; chats: ``messages: [{role, content}]``;
preferences: ``messages`` (the context, ending on a user turn), ``chosen``, ``rejected`` (assistant replies).
Offline sources are registry assets; hub profiles read the article's hub datasets; ``load_file`` reads your own
``.json``/``.jsonl`` file and checks it record by record.

Bad data raises ``DataError``, whose message is ONE line naming the file, the line or record, the field and the
fix: the CLI prints it as ``error: ...`` (exit code 2), a notebook shows it as the exception's message.
``datasets`` is imported inside the functions that need it: a bad file should be answered before anything heavy
loads. The error types and record validators are in ``ftlib.schema``, shared with ``ftlib.samples``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlib.assets import require
from ftlib.profiles import Profile, activate
from ftlib.registry import ASSETS
from ftlib.schema import DataError, SampleError, type_name, validate_instruction, validate_messages

if TYPE_CHECKING:
    import datasets

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
HUB_SPLITS = {"HuggingFaceH4/ultrachat_200k": "train_sft", "HuggingFaceH4/ultrafeedback_binarized": "train_prefs"}
CHAT_KEYS = ("messages", "conversations")
INSTRUCTION_KEYS = ("instruction", "input", "output")


def _load(role: str, profile: Profile | str | None) -> datasets.Dataset:
    """The profile's dataset for ``role``: an offline asset (a JSON file), or a hub dataset. A hub dataset that
    cannot be reached (no network, offline mode, a gated or missing repo) is one ``DataError`` line naming the
    profile, the dataset and the fix, not a traceback from ``datasets``."""
    import datasets

    profile = activate(profile)
    if role not in profile.datasets:
        raise DataError(f"profile {profile.name!r} has no dataset {role!r}; use one of {', '.join(profile.datasets)}"
                        " or ftlib.data.load_file for your own .json/.jsonl file")
    source = profile.datasets[role]
    if source in ASSETS:
        path = require(source)
        try:
            return datasets.load_dataset("json", data_files=str(path), split="train")
        except Exception:
            read_json(path)  # a damaged file raises its one-line DataError here
            raise
    try:
        return datasets.load_dataset(source, split=HUB_SPLITS.get(source, "train"))
    except OSError as e:  # ConnectionError, datasets' DatasetNotFoundError, huggingface_hub's gated-repo errors
        why = " ".join(str(e).split())[:200]
        raise DataError(f"profile {profile.name!r}: could not reach dataset {source!r} on the Hugging Face hub "
                        f"({why}); run with FTLIB_PROFILE=offline (no network needed), or check the network "
                        "and, for a gated dataset, `huggingface-cli login`") from None


def sharegpt_to_messages(turns: Any, index: int | None = None) -> list[dict]:
    """ShareGPT ``{from, value}`` turns to ``{role, content}`` messages (``index``: the record, for errors)."""
    if not isinstance(turns, list):
        raise SampleError(index, "conversations", f"must be a list of {{from, value}} turns, got {type_name(turns)}")
    out = []
    for j, t in enumerate(turns):
        speaker = t.get("from") if isinstance(t, dict) else None
        if not isinstance(speaker, str):
            raise SampleError(index, f"conversations[{j}]", "must be a dict with a string 'from' and a 'value'")
        if speaker not in SHAREGPT_ROLES:
            raise SampleError(index, f"conversations[{j}].from",
                              f"unknown ShareGPT speaker {speaker!r}; expected one of {sorted(SHAREGPT_ROLES)}")
        out.append({"role": SHAREGPT_ROLES[speaker], "content": t.get("value")})
    return out


def load_instructions(profile: Profile | str | None = None, role: str = "alpaca") -> datasets.Dataset:
    """Alpaca-style rows (instruction/input/output)."""
    ds = _load(role, profile)
    keep = ["instruction", "input", "output"]
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def load_identity(name: str, author: str, profile: Profile | str | None = None) -> datasets.Dataset:
    """The identity rows with their ``{{name}}``/``{{author}}`` placeholders filled in."""
    ds = load_instructions(profile, role="identity")

    def fill(row):
        return {k: row[k].replace("{{name}}", name).replace("{{author}}", author)
                for k in ("instruction", "input", "output")}

    return ds.map(fill)


def load_chats(profile: Profile | str | None = None) -> datasets.Dataset:
    """Multi-turn chats as ``messages``."""
    ds = _load("chat", profile)
    if "conversations" in ds.column_names:
        ds = ds.map(lambda row: {"messages": sharegpt_to_messages(row["conversations"])})
    return ds.select_columns(["messages"])


def load_preferences(profile: Profile | str | None = None) -> datasets.Dataset:
    """Preference pairs: context ``messages`` plus ``chosen``/``rejected`` assistant replies (strings)."""
    ds = _load("preference", profile)
    if "conversations" in ds.column_names:  # LLaMA-Factory's ShareGPT-style DPO file
        ds = ds.map(lambda r: {"messages": sharegpt_to_messages(r["conversations"]),
                               "chosen": r["chosen"]["value"], "rejected": r["rejected"]["value"]},
                    remove_columns=ds.column_names)
    else:  # ultrafeedback_binarized: chosen/rejected are whole chats ending with the assistant reply
        ds = ds.map(lambda r: {"messages": r["chosen"][:-1], "chosen": r["chosen"][-1]["content"],
                               "rejected": r["rejected"][-1]["content"]}, remove_columns=ds.column_names)
    return ds


def load_questions(profile: Profile | str | None = None) -> list[dict]:
    """MT-Bench's 80 two-turn questions (held-out chat probes: notebook 09 asks their first turns)."""
    profile = activate(profile)
    source = profile.datasets.get("questions")
    if source in ASSETS:  # a small JSON file: read as it is (no datasets cache, no progress bar)
        return [record for _, record in read_json(require(source))]
    return [dict(record) for record in _load("questions", profile)]


def instructions_to_chats(ds: datasets.Dataset) -> datasets.Dataset:
    """Alpaca rows as one-exchange chats (user: instruction + input, assistant: output), for chat models."""
    def to_messages(row):
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}

    return ds.map(to_messages, remove_columns=ds.column_names)


# ---------------------------------------------------------------- your own files
def read_json(path: str | Path) -> list[tuple[str, Any]]:
    """The records of a JSON list or JSON-lines file, each with where it is (``"line 3"``, or ``"record 2"``: its
    0-based index in a JSON list). Raises ``DataError`` for a file that cannot be read as records at all."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass the .json or .jsonl file itself")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise DataError(f"{path} is empty; write a JSON list of records or one JSON record per line (JSONL)")
    if path.suffix == ".jsonl":
        return _json_lines(path, text)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):
            raise DataError(f"{path}: line {e.lineno}, column {e.colno} is not valid JSON ({_why(e)}); "
                            "fix the file there (was it cut off?)") from None
        return _json_lines(path, text)  # a .json file may hold JSON lines too
    except RecursionError:
        raise DataError(f"{path}: its JSON is nested too deeply to read; records are flat objects") from None
    if isinstance(whole, list):
        if not whole:
            raise DataError(f"{path} holds an empty list; it needs at least one record")
        return [(f"record {i}", record) for i, record in enumerate(whole)]
    if isinstance(whole, dict) and any(k in whole for k in (*CHAT_KEYS, *INSTRUCTION_KEYS)):
        return [("line 1", whole)]  # a one-record JSON-lines file
    if isinstance(whole, dict):
        lists = [k for k, v in whole.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        fix = (f"the records seem to be under {lists[0]!r}: save that list as the file" if lists
               else "write a JSON list [{...}, ...] or one record per line (JSONL)")
        raise DataError(f"{path}: the top level is a JSON object with keys {sorted(whole)[:5]}, not a list of "
                        f"records; {fix}")
    raise DataError(f"{path}: the top level is a JSON {type_name(whole)}, not a list of records; "
                    "write a JSON list [{...}, ...] or one record per line (JSONL)")


def _why(e: json.JSONDecodeError) -> str:
    """json's reason without its dangling "at" ("Unterminated string starting at" -> "Unterminated string")."""
    return e.msg.removesuffix(" at").removesuffix(" starting")


def _json_lines(path: Path, text: str) -> list[tuple[str, Any]]:
    records = []
    lines = text.split("\n")  # not splitlines(): JSON strings may hold U+2028 and friends unescaped
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {n}", json.loads(line)))
        except RecursionError:
            raise DataError(f"{path}: line {n} is nested too deeply to read; records are flat objects") from None
        except json.JSONDecodeError as e:
            hint = (" - it looks like a JSON list: name the file .json" if n == 1 and line.lstrip().startswith("[")
                    else " - the file looks cut off here" if n == len(lines) else "")
            raise DataError(f"{path}: line {n}, column {e.colno} is not valid JSON ({_why(e)}){hint}; "
                            "fix or delete that line") from None
    return records


@dataclass
class FileReport:
    """What ``load_file`` did: the kind it found, records read, and the ones dropped (where -> reason)."""

    path: str
    kind: str  # "instructions" or "chats"
    total: int
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.total - len(self.dropped)

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.kept}/{self.total} records kept ({self.kind}), {len(self.dropped)} dropped"]
        lines += [f"  dropped {where}, {reason}" for where, reason in list(self.dropped.items())[:10]]
        if len(self.dropped) > 10:
            lines.append(f"  ... and {len(self.dropped) - 10} more")
        return "\n".join(lines)


def _kind(path: Path, records: list[tuple[str, Any]]) -> str:
    """Chats if any record has ``messages``/``conversations``, Alpaca if any has an Alpaca field."""
    dicts = [r for _, r in records if isinstance(r, dict)]
    if any(k in r for r in dicts for k in CHAT_KEYS):
        return "chats"
    if any(k in r for r in dicts for k in INSTRUCTION_KEYS):
        return "instructions"
    where, first = records[0]
    if not isinstance(first, dict):
        raise DataError(f"{path}: {where} is a JSON {type_name(first)}, not a record; write each record as an "
                        'object like {"instruction": ..., "output": ...} or {"messages": [...]}')
    raise DataError(f"{path}: {where}, field 'messages': no record has 'messages' (chats) or 'instruction'/'output' "
                    f"(Alpaca), the first has keys {sorted(first)[:6]}; rename the fields to one of these schemas")


def _normalise(record: Any, kind: str) -> dict:
    """The record in its schema's exact shape, or ``SampleError`` naming the bad field."""
    if kind == "instructions":
        validate_instruction(record)
        return {"instruction": record["instruction"], "input": record.get("input") or "", "output": record["output"]}
    if not isinstance(record, dict):
        raise SampleError(None, "messages", f"expected a dict record, got {type_name(record)}; "
                                            "write each record as a JSON object")
    if "messages" not in record and "conversations" in record:
        messages = sharegpt_to_messages(record["conversations"])
    else:
        messages = record.get("messages")
    validate_messages(messages)
    return {"messages": [{"role": m["role"], "content": m.get("content") or ""} for m in messages]}


def load_file(path: str | Path, limit: int | None = None) -> tuple[datasets.Dataset, FileReport]:
    """Your own ``.json``/``.jsonl`` file of Alpaca records or chats (``messages``, or ShareGPT ``conversations``),
    normalised to the schema and checked before any model or tokenizer is needed.

    Records with a bad field are dropped and listed in the report; a file that cannot be read, or whose records
    are all bad, raises ``DataError``. ``limit``: read only the first N records.
    """
    path = Path(path)
    records = read_json(path)[:limit] if limit else read_json(path)
    kind = _kind(path, records)
    rows, dropped = [], {}
    for where, record in records:
        try:
            rows.append(_normalise(record, kind))
        except SampleError as e:
            dropped[where] = f"field {e.field!r}: {e.problem}"
    if not rows:
        where, reason = next(iter(dropped.items()))
        many = f"all {len(records)} records are bad, e.g." if len(records) > 1 else "its only record is bad:"
        raise DataError(f"{path}: {many} {where}, {reason}")
    import datasets

    text = datasets.Value("string")
    features = datasets.Features({"messages": [{"role": text, "content": text}]} if kind == "chats"
                                 else {k: text for k in INSTRUCTION_KEYS})
    return datasets.Dataset.from_list(rows, features=features), FileReport(str(path), kind, len(records), dropped)
