"""The exercise framework: ``Exercise`` (check / hint / solution), ``Verdict``, and the one way to add a check,
the ``@register`` decorator. A check gets the learner's answer and returns ``None`` when it works or one sentence
saying what is wrong. "Not answered yet" has one convention: the framework answers a bare ``...``/``None`` and a
dict of predictions still all ``...``; a check calls the learner's function through ``call``, which turns a body
still at ``...`` (it returns None) into the "not answered yet" verdict.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Exercise", "Verdict", "register", "call", "Unanswered", "NOT_YET", "registered"]

_REGISTRY: dict[str, Exercise] = {}
PLACEHOLDER_HELP = "replace the `...` with your answer and run the cell again"
# the sentence of notebooks 05-09 for a function that returns None (00-04 name the function instead; the committed
# outputs show both wordings, so both stay)
NOT_YET = "not answered yet: your function returns None (replace the `...` with your code; ex.hint() gives a hint)"


@dataclass(frozen=True)
class Verdict:
    """What ``check`` says: truthy when the answer works; prints as one line."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.message}"


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``check(answer)``, ``hint()``, ``solution()``."""

    key: str
    title: str
    checker: Callable[[Any], str | None]
    hint_text: str
    success: str

    def check(self, answer: Any) -> Verdict:
        """Run the check; a placeholder (``...``, ``None``) or an answer that raises gets a verdict, no traceback."""
        if answer is ... or answer is None:
            return Verdict(False, f"{self.key} not answered yet: {PLACEHOLDER_HELP} (ex.hint() gives a hint).")
        try:
            problem = self.checker(answer)
        except Exception as e:  # the learner's function raised: say so in one line, like any other wrong answer
            first = str(e).splitlines()[0] if str(e) else ""
            return Verdict(False, f"{self.key}: your answer raised {type(e).__name__}: {first}".rstrip(": "))
        if problem:
            return Verdict(False, f"{self.key}: {problem}")
        return Verdict(True, f"{self.key} correct: {self.success}")

    def hint(self) -> None:
        print(f"hint for {self.key}: {self.hint_text}")

    def solution(self) -> None:
        nb = self.key.split(".")[0]
        print(f"the worked solution to {self.key} ({self.title}) is in notebooks/solutions/{nb}_solutions.ipynb")


class Unanswered(Exception):
    """Raised by ``call`` when the learner's function is still a placeholder; ``register`` turns it into a verdict."""


def call(fn: Callable, *args: Any, unanswered: str | None = None) -> Any:
    """Call the learner's function. A body still at ``...`` returns None (or ``...``): raise ``Unanswered`` with
    ``unanswered``, else a sentence naming the function."""
    out = fn(*args)
    if out is None or out is ...:
        raise Unanswered(unanswered or f"not answered yet: {getattr(fn, '__name__', 'your function')} returns None; "
                                       "write its body in place of the `...`")
    return out


def register(key: str, title: str, hint: str, success: str) -> Callable[[Callable], Callable]:
    """Decorator: make the decorated function the check of exercise ``key`` ("NN.k"). The registered check also
    answers a dict of predictions still all ``...`` and an ``Unanswered`` raised by ``call``."""
    nb, _, k = key.partition(".")
    if not (len(nb) == 2 and nb.isdigit() and k.isdigit()):
        raise ValueError(f"exercise key {key!r}: write it as 'NN.k', e.g. '03.1'")

    def wrap(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key} is registered twice")

        def run(answer: Any) -> str | None:
            if isinstance(answer, dict) and answer and all(v is ... for v in answer.values()):
                return "not answered yet: replace each `...` in the dict with your prediction"
            try:
                return check(answer)
            except Unanswered as e:
                return str(e)

        _REGISTRY[key] = Exercise(key, title, run, hint, success)
        return check

    return wrap


def registered() -> dict[str, Exercise]:
    """Every exercise registered so far, by key."""
    return dict(sorted(_REGISTRY.items()))
