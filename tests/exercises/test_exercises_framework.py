"""The exercise framework: verdicts, placeholders, answers that raise, keys."""
import pytest

from ftlib.course import exercises as ex
from ftlib.course.exercises import core


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(core, "_REGISTRY", {})

    @ex.register("99.1", "double it", hint="multiply by two", success="2x works")
    def _check(fn):
        for x in (0, 3, -2):
            if fn(x) != 2 * x:
                return f"f({x}) gave {fn(x)}, expected {2 * x}"
        return None

    return ex.exercise("99.1")


def test_right_answer_passes_and_prints_one_line(toy):
    v = toy.check(lambda x: x + x)
    assert v and repr(v) == "✓ 99.1 correct: 2x works"


def test_wrong_answer_says_what_is_wrong(toy):
    v = toy.check(lambda x: x * x)
    assert not v and repr(v) == "✗ 99.1: f(3) gave 9, expected 6"


def test_placeholder_and_raising_answers_get_a_verdict_not_a_traceback(toy):
    assert "not answered yet" in repr(toy.check(...))
    v = toy.check(lambda x: 1 / 0)
    assert not v and "raised ZeroDivisionError: division by zero" in repr(v)


def test_hint_and_solution_point_somewhere(toy, capsys):
    toy.hint()
    toy.solution()
    out = capsys.readouterr().out
    assert "multiply by two" in out and "notebooks/solutions/99_solutions.ipynb" in out


def test_keys_are_checked(toy):
    with pytest.raises(ValueError, match="'NN.k'"):
        ex.register("3.1", "t", "h", "s")
    with pytest.raises(ValueError, match="registered twice"):
        ex.register("99.1", "t", "h", "s")(lambda a: None)
    with pytest.raises(KeyError, match="no exercise '42.1'"):
        ex.exercise("42.1")


def test_every_notebook_has_two_to_four_checked_exercises_with_solutions():
    """The course promise: each notebook ends with 2-4 exercises whose checks exist, solved in notebooks/solutions."""
    import re
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parents[2] / "notebooks"
    registered = ex.all_exercises()
    for path in sorted(root.glob("[0-9][0-9]_*.ipynb")):
        nb_key = path.name[:2]
        code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        keys = sorted(set(re.findall(r'exercise\("(\d\d\.\d+)"\)', "\n".join(code))))
        assert 2 <= len(keys) <= 4 and all(k.startswith(nb_key + ".") for k in keys), (path.name, keys)
        assert keys == sorted(k for k in registered if k.startswith(nb_key + ".")), path.name
        solutions = root / "solutions" / f"{nb_key}_solutions.ipynb"
        solved = "\n".join(c.source for c in nbformat.read(solutions, as_version=4).cells if c.cell_type == "code")
        assert all(f'exercise("{k}")' in solved for k in keys), solutions.name


def test_not_answered_yet_prints_what_the_committed_notebooks_show():
    """One convention (``call`` inside a ``@register`` check), two wordings kept as the committed outputs show them."""
    from pathlib import Path

    def my_sample(prompt_ids, response_ids, eos_id):
        ...

    def shifted_loss(logits, labels):
        ...

    shown = {"03_alpaca_samples": repr(ex.exercise("03.1").check(my_sample)),
             "05_sft": repr(ex.exercise("05.1").check(shifted_loss))}
    assert shown["05_sft"].endswith(core.NOT_YET)
    root = Path(__file__).resolve().parents[2] / "notebooks"
    for name, verdict in shown.items():
        assert verdict in (root / f"{name}.ipynb").read_text(encoding="utf-8"), (name, verdict)
