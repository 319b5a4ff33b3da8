"""The record schema both ends of the data path share: the error types, the label and role constants, the
record validators. The bottom of the library: ``data`` (files, datasets) and ``samples`` (tokenisation) both
import it and it imports nothing of ftlib, so neither needs the other for its errors.

instructions: ``instruction, input, output``; chats: ``messages: [{role, content}]``. Bad data raises
``DataError``, whose message is ONE line naming the file, the line or record, the field and the fix.
"""
from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100  # the label of a position that is not trained on (Hugging Face's and PyTorch's convention)
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Data that cannot be trained on. The message is one line: the file, the line or record, the field, the fix."""


class SampleError(DataError):
    """A record that cannot become a training sample; names the record index and the field."""

    def __init__(self, index: int | None, field: str, problem: str):
        self.index, self.field, self.problem = index, field, problem
        where = f"record {index}" if index is not None else "record"
        super().__init__(f"{where}, field {field!r}: {problem}")


def type_name(value: Any) -> str:
    """A value's type for error messages: Python's name, except JSON's ``null`` for None."""
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------- validation
def _text(record: Any, key: str, index: int | None, required: bool = True) -> str:
    if not isinstance(record, dict):
        raise SampleError(index, key, f"expected a dict record, got {type_name(record)}; "
                                      "write each record as a JSON object")
    value = record.get(key)
    if value is None:
        if not required:
            return ""
        state = "missing" if key not in record else "None"
        raise SampleError(index, key, f"is {state}; every record needs a string {key!r}")
    if not isinstance(value, str):
        raise SampleError(index, key, f"must be a string, got {type_name(value)}; write it as text in quotes")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: JSON allows "\ud800", UTF-8 (and Arrow) cannot hold it
            raise SampleError(index, key, f"holds {value[e.start]!r} at character {e.start}, which is not a "
                                          "character UTF-8 can store; remove it") from None
    if required and not value.strip():
        raise SampleError(index, key, "is empty; remove the record or fill the field")
    return value


def validate_instruction(record: Any, index: int | None = None) -> None:
    """``instruction`` and ``output``: non-empty strings; ``input``: a string, empty or absent meaning none."""
    _text(record, "instruction", index)
    _text(record, "input", index, required=False)
    _text(record, "output", index)


def validate_messages(messages: Any, index: int | None = None) -> None:
    """An optional leading system turn, then strictly alternating user/assistant turns ending on assistant."""
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if isinstance(messages, list) else type_name(messages)
        raise SampleError(index, "messages", f"must be a non-empty list of {{role, content}} dicts, got {got}")
    expected = "user"
    for j, m in enumerate(messages):
        where = f"messages[{j}]"
        if not isinstance(m, dict):
            raise SampleError(index, where, f"must be a dict with 'role' and 'content', got {type_name(m)}")
        role = m.get("role")
        if role not in ROLES:
            raise SampleError(index, f"{where}.role", f"unknown role {role!r}; expected one of {ROLES}")
        if role == "system" and j != 0:
            raise SampleError(index, f"{where}.role", "a system turn may only come first; move it there or drop it")
        if role != "system" and role != expected:
            problem = (f"two {role!r} turns in a row" if j and messages[j - 1]["role"] == role
                       else f"expected a {expected!r} turn here")
            raise SampleError(index, f"{where}.role", f"{problem}; user and assistant turns must alternate")
        try:
            _text(m, "content", index, required=role != "system")
        except SampleError as e:
            raise SampleError(index, f"{where}.content", e.problem) from None
        if role != "system":
            expected = "assistant" if role == "user" else "user"
    if messages[-1]["role"] != "assistant":
        raise SampleError(index, f"messages[{len(messages) - 1}].role",
                          "the chat ends on a user turn; there is no response to train on - drop that last turn")
