"""docs/teaching.md's agenda against the committed notebooks: each run time from the execution records (05: from
its own last cell), and 05's peak memory. After re-running notebooks: `python tools/timing.py --table`."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import timing  # noqa: E402

NOTEBOOKS = {p.stem[:2]: p for p in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))}
ROW = re.compile(r"^\| (\d\d) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", re.M)


def agenda() -> dict[str, tuple[str, str, str]]:
    text = (ROOT / "docs" / "teaching.md").read_text()
    return {m.group(1): (m.group(2).strip(), m.group(3).strip(), m.group(4).strip()) for m in ROW.finditer(text)}


def seconds(cell: str) -> tuple[float, float] | None:
    """The table's figure in seconds and half its last digit's unit (the rounding), or None if not recorded."""
    if cell == "not recorded":
        return None
    value, unit = cell.split()
    scale = {"s": 1, "min": 60}[unit]
    decimals = len(value.split(".")[1]) if "." in value else 0
    return float(value) * scale, 0.5 * 10 ** -decimals * scale


def test_every_notebook_has_a_row():
    assert sorted(agenda()) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS))
def test_run_time_and_peak_match_the_committed_run(nb):
    run = timing.notebook_run(json.loads(NOTEBOOKS[nb].read_text()))
    _, run_time, peak = agenda()[nb]
    said = seconds(run_time)
    if run.seconds is None:
        assert said is None, f"{nb}: the table gives {run_time}, the notebook has no record of it"
    else:
        assert said is not None, f"{nb}: recorded {run.seconds:.0f} s, the table says {run_time}"
        assert abs(said[0] - run.seconds) <= said[1] + 1e-9, f"{nb}: table {run_time}, records {run.seconds:.1f} s"
    assert peak == (f"{run.peak_gb} GB" if run.peak_gb else "not recorded"), nb


def test_the_table_parser_reads_both_units():
    assert seconds("25 s") == (25.0, 0.5) and seconds("5.6 min") == (336.0, 3.0) and seconds("not recorded") is None
    assert timing.fmt_seconds(25.4) == "25 s" and timing.fmt_seconds(336.0) == "5.6 min"
