"""tools/timing.py: run times from execution records, and the rule that every cell over 30 s is announced."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import timing  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def code(start: str | None, end: str | None, text: str = "") -> dict:
    meta = {"execution": {"iopub.execute_input": start, "shell.execute_reply": end}} if start else {}
    return {"cell_type": "code", "metadata": meta, "source": "x", "outputs": [{"text": text}] if text else []}


def md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


T = "2026-11-27T22:{:02d}:{:02d}.000000Z"


def test_cell_and_notebook_seconds_come_from_the_records():
    nb = {"cells": [md("# title"), code(T.format(0, 0), T.format(0, 5)), md("⏱ about 2 minutes, 5 GB: wait"),
                    code(T.format(0, 6), T.format(2, 16))]}
    run = timing.notebook_run(nb)
    assert run.source == "records" and run.cells == {1: 5.0, 3: 130.0} and run.seconds == 136.0
    assert timing.long_cells(nb) == [(3, 130.0, (120.0, 5.0))] and timing.unannounced(nb) == []


def test_a_long_cell_without_a_line_above_or_with_a_wrong_time_is_reported():
    bare = {"cells": [md("Train the model."), code(T.format(0, 0), T.format(1, 0))]}
    assert [(i, s) for i, s, _ in timing.unannounced(bare)] == [(1, 60.0)]
    wrong = {"cells": [md("⏱ about 10 s, 1 GB"), code(T.format(0, 0), T.format(1, 0))]}
    assert "announced 10 s, ran 60 s" in timing.unannounced(wrong)[0][2]
    after_code = {"cells": [md("⏱ about 1 min, 1 GB"), code(None, None), code(T.format(0, 0), T.format(1, 0))]}
    assert len(timing.unannounced(after_code)) == 1  # only the cell *just* above counts


def test_without_records_the_notebooks_own_report_is_read():
    nb = {"cells": [code(None, None, "this run: 5.6 minutes, peak memory 5.4 GB\n")]}
    run = timing.notebook_run(nb)
    assert (run.source, run.seconds, run.peak_gb, run.cells) == ("self-report", 336.0, 5.4, {})
    assert timing.notebook_run({"cells": [code(None, None)]}).source == "none"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_long_cell_of_the_committed_run_is_announced(path):
    nb = json.loads(path.read_text())
    if timing.notebook_run(nb).source != "records":
        pytest.skip(f"{path.name} has no execution records: run it with `jupyter nbconvert --execute` (nbclient "
                    "records timings by default) so its long cells can be checked")
    assert timing.unannounced(nb) == [], f"{path.name}: announce each long cell in the markdown cell above it"
