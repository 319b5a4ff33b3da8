"""Exercises with instant checks, the way interactive courses do it: a learner answers in a notebook cell and
learns at once whether the answer works and, if not, what is wrong in one sentence.

    from ftlib.course.exercises import exercise
    ex = exercise("03.1")           # notebook 03, exercise 1
    ex.hint()                       # a nudge, on request
    ex.check(my_answer)             # ✓ or ✗ with one sentence on what is wrong
    ex.solution()                   # where the worked solution is (notebooks/solutions/)

The checks themselves live in one module per few notebooks (``nb00_02``, ``nb03_04``, ``nb05_06``, ``nb07_09`` in
this package; what they share is in ``shared``) and register
here with ``@register`` (or ``_exercise``, which also handles a function still at ``...``). A check gets the
learner's answer and returns ``None`` when it works or one sentence saying what is wrong; it must be deterministic
and cheap (a tokenizer or a tiny model, never training), so the same verdict prints on any machine.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Exercise", "Verdict", "exercise", "register", "all_exercises"]

_MODULES = ("ftlib.course.exercises.nb00_02", "ftlib.course.exercises.nb03_04", "ftlib.course.exercises.nb05_06",
            "ftlib.course.exercises.nb07_09")
_REGISTRY: dict[str, Exercise] = {}
PLACEHOLDER_HELP = "replace the `...` with your answer and run the cell again"


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


def register(key: str, title: str, hint: str, success: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``checker`` the check of exercise ``key`` ("NN.k")."""
    nb, _, k = key.partition(".")
    if not (len(nb) == 2 and nb.isdigit() and k.isdigit()):
        raise ValueError(f"exercise key {key!r}: write it as 'NN.k', e.g. '03.1'")

    def wrap(checker: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key} is registered twice")
        _REGISTRY[key] = Exercise(key, title, checker, hint, success)
        return checker

    return wrap


# ----- answers still at a placeholder: one "not answered yet" verdict, not a traceback
NOT_YET = "not answered yet: your function returns None (replace the `...` with your code; ex.hint() gives a hint)"


class _Unanswered(Exception):
    pass


def _call(fn: Callable, *args: Any) -> Any:
    """Call the learner's function; a body still at ``...`` returns None, which gets "not answered yet"."""
    out = fn(*args)
    if out is None or out is ...:
        raise _Unanswered(f"not answered yet: {getattr(fn, '__name__', 'your function')} returns None; "
                          "write its body in place of the `...`")
    return out


def _exercise(key: str, title: str, hint: str, success: str) -> Callable:
    """``register``, plus one verdict for every unanswered placeholder: a function whose body is ``...`` (see
    ``_call``) or a dict of predictions still all ``...`` (the framework itself handles a bare ``...``)."""
    def wrap(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        def run(answer: Any) -> str | None:
            if isinstance(answer, dict) and answer and all(v is ... for v in answer.values()):
                return "not answered yet: replace each `...` in the dict with your prediction"
            try:
                return check(answer)
            except _Unanswered as e:
                return str(e)
        register(key, title, hint, success)(run)
        return check
    return wrap


def _load() -> None:
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a missing dependency inside the module is a real error
                raise


def all_exercises() -> dict[str, Exercise]:
    """Every registered exercise, by key."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def exercise(key: str) -> Exercise:
    """The exercise ``key`` ("NN.k"), e.g. ``exercise("03.1")``."""
    exercises = all_exercises()
    if key not in exercises:
        raise KeyError(f"no exercise {key!r}; there are: {', '.join(exercises) or 'none yet'}")
    return exercises[key]
