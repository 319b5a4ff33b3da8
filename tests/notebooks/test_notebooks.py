"""Static checks on the notebooks' checked cells (no kernel): nbval compares these byte for byte on every machine.

Checked cells are marked with nbval's ``nbval-check-output`` cell tag, never with a comment in the source, so
the learner does not see test plumbing. A checked cell whose saved output holds an error or a stderr stream
(warnings vary with the machine and library versions) cannot pass elsewhere.
"""
import json
from pathlib import Path

import pytest

_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(_DIR.glob("*.ipynb")) + sorted(_DIR.glob("solutions/*.ipynb"))  # nbval runs both in CI
TAG = "nbval-check-output"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def checked_cells(nb: dict) -> list[tuple[int, dict]]:
    """(index among code cells, cell) of every cell nbval --nbval-lax compares."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return [(i, c) for i, c in enumerate(code) if TAG in (c.get("metadata", {}).get("tags") or [])]


def problems(nb: dict) -> list[str]:
    """Everything that would make a notebook's checked cells unportable or invisible to nbval."""
    found = []
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(code):
        if "NBVAL_CHECK_OUTPUT" in _source(cell):
            found.append(f"cell {i}: '# NBVAL_CHECK_OUTPUT' comment; use the '{TAG}' cell tag instead")
        tags = cell.get("metadata", {}).get("tags")
        if tags is not None and not isinstance(tags, list):
            found.append(f"cell {i}: metadata.tags must be a list (nbval ignores it otherwise)")
    checked = checked_cells(nb)
    if not checked:
        found.append(f"no cell tagged '{TAG}': nbval --nbval-lax would compare nothing")
    for i, cell in checked:
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                found.append(f"cell {i}: checked cell saved an error ({out.get('ename')})")
            elif out["output_type"] == "stream" and out.get("name") == "stderr":
                found.append(f"cell {i}: checked cell saved stderr output (warnings differ between machines)")
        if cell.get("outputs") and cell.get("execution_count") is None:
            found.append(f"cell {i}: checked cell has outputs but no execution_count (nbval rejects it)")
    return found


def test_there_are_notebooks():
    assert len([p for p in NOTEBOOKS if p.parent == _DIR]) >= 10 and len(NOTEBOOKS) >= 20


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(_DIR)))
def test_checked_cells_are_tagged_and_clean(path):
    assert problems(json.loads(path.read_text(encoding="utf-8"))) == []


def _cell(source: str, tags=None, outputs=(), execution_count=1) -> dict:
    return {"cell_type": "code", "source": source, "metadata": {"tags": tags} if tags is not None else {},
            "outputs": list(outputs), "execution_count": execution_count}


def test_problems_catches_each_kind_of_fault():
    bad = {"cells": [
        _cell("# NBVAL_CHECK_OUTPUT\nprint(1)"),
        _cell("1/0", tags=[TAG], outputs=[{"output_type": "error", "ename": "ZeroDivisionError"}]),
        _cell("warn()", tags=[TAG], outputs=[{"output_type": "stream", "name": "stderr", "text": "w"}]),
        _cell("print(2)", tags=TAG),
        _cell("print(3)", tags=[TAG], outputs=[{"output_type": "stream", "name": "stdout", "text": "3"}],
              execution_count=None),
    ]}
    found = problems(bad)
    assert [f.split(":")[0] for f in found] == ["cell 0", "cell 3", "cell 1", "cell 2", "cell 4"]


def test_problems_requires_a_checked_cell():
    assert problems({"cells": [_cell("print(1)")]}) == [
        f"no cell tagged '{TAG}': nbval --nbval-lax would compare nothing"]
    assert problems({"cells": [_cell("print(1)", tags=[TAG])]}) == []


def shape_problems(nb: dict) -> list[str]:
    """The course's frame: the first markdown cell says what you will learn and need; the last three sections are
    Summary, Exercises and Further reading, in that order."""
    md = [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    found = [f"first markdown cell lacks '{w}'" for w in ("You will learn", "You need") if not md or w not in md[0]]
    heads = [line.strip() for text in md for line in text.splitlines() if line.startswith("## ")]
    if heads[-3:] != ["## Summary", "## Exercises", "## Further reading"]:
        found.append(f"last sections are {heads[-3:]}, not Summary, Exercises, Further reading")
    return found


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.parent == _DIR], ids=lambda p: p.name)
def test_each_notebook_opens_with_objectives_and_ends_with_summary_exercises_reading(path):
    assert shape_problems(json.loads(path.read_text(encoding="utf-8"))) == []


def test_shape_problems_sees_a_missing_opening_and_a_misnamed_summary():
    nb = {"cells": [{"cell_type": "markdown", "source": "# 01\nYou will learn X."},
                    {"cell_type": "markdown", "source": "## Take-aways\n## Exercises\n## Further reading"}]}
    assert shape_problems(nb) == ["first markdown cell lacks 'You need'",
                                  "last sections are ['## Take-aways', '## Exercises', '## Further reading'], not "
                                  "Summary, Exercises, Further reading"]
