"""Exercises with instant checks, the way interactive courses do it: a learner answers in a notebook cell and
learns at once whether the answer works and, if not, what is wrong in one sentence.

    from ftlib.course.exercises import exercise
    ex = exercise("03.1")           # notebook 03, exercise 1
    ex.hint()                       # a nudge, on request
    ex.check(my_answer)             # ✓ or ✗ with one sentence on what is wrong
    ex.solution()                   # where the worked solution is (notebooks/solutions/)

The framework is in ``core`` (``@register``, ``call``); the checks live in one module per few notebooks (``nb00_02``,
``nb03_04``, ``nb05_06``, ``nb07_09``, ``nb10``; what they share is in ``shared``), imported below so that each
registers its checks. A check must be deterministic and cheap (a tokenizer or a tiny model; 10.3 trains one for
about a second), so the same verdict prints on any machine.
"""
from __future__ import annotations

from ftlib.course.exercises import nb00_02, nb03_04, nb05_06, nb07_09, nb10  # noqa: F401  (importing registers checks)
from ftlib.course.exercises.core import Exercise, Verdict, register, registered

__all__ = ["Exercise", "Verdict", "exercise", "register", "all_exercises"]


def all_exercises() -> dict[str, Exercise]:
    """Every registered exercise, by key."""
    return registered()


def exercise(key: str) -> Exercise:
    """The exercise ``key`` ("NN.k"), e.g. ``exercise("03.1")``."""
    exercises = all_exercises()
    if key not in exercises:
        raise KeyError(f"no exercise {key!r}; there are: {', '.join(exercises) or 'none yet'}")
    return exercises[key]
