"""How long each notebook and each cell took in the committed run, from the notebooks' execution records.

    python tools/timing.py                 # per-notebook run time and the cells over 30 s
    python tools/timing.py --check         # exit 1 if a cell over 30 s has no announcement above it

The records: nbclient (``jupyter nbconvert --execute``, nbval does not write) stores, with
``record_timing=True`` (its default), ``metadata.execution`` on each code cell: ``iopub.execute_input`` when the
kernel started the cell and ``shell.execute_reply`` when it finished. A notebook saved from JupyterLab has none,
and neither does a notebook whose run cleared them; notebook 05 prints its own run time and peak memory in its
last code cell ("this run: 5.6 minutes, peak memory 5.4 GB"), which ``notebook_run`` reads when there are no
records. An announcement is a line in the markdown cell just above a long cell, such as
"⏱ about 4 minutes, 5 GB: ...": the clock, a time within a factor of two of the recorded one, and the memory.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG_S = 30.0
SELF_REPORT = re.compile(r"this run: ([\d.]+) minutes, peak memory ([\d.]+) GB")
ANNOUNCE = re.compile(r"⏱\s*about ([\d.]+)\s*(s|seconds?|min|minutes?)\b[^\n]*?([\d.]+)\s*GB")


@dataclass
class Run:
    seconds: float | None        # the whole notebook, first cell start to last cell end
    peak_gb: float | None        # only where the notebook prints it
    cells: dict[int, float]      # cell index -> seconds, for every code cell with a record
    source: str                  # "records", "self-report" or "none"


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def cell_seconds(cell: dict) -> float | None:
    """Seconds one code cell ran (execute_input to execute_reply), or None without a record."""
    record = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in record or "shell.execute_reply" not in record:
        return None
    return (_time(record["shell.execute_reply"]) - _time(record["iopub.execute_input"])).total_seconds()


def notebook_run(nb: dict) -> Run:
    """The notebook's run time, peak memory (if printed) and per-cell seconds."""
    cells = {i: s for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (s := cell_seconds(c)) is not None}
    peak, reported = None, None
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if m := SELF_REPORT.search(_text(out.get("text", ""))):
                reported, peak = float(m.group(1)) * 60, float(m.group(2))
    if cells:
        records = [c["metadata"]["execution"] for c in nb["cells"] if c["cell_type"] == "code" and
                   "shell.execute_reply" in c.get("metadata", {}).get("execution", {})]
        total = (_time(records[-1]["shell.execute_reply"]) - _time(records[0]["iopub.execute_input"])).total_seconds()
        return Run(total, peak, cells, "records")
    return Run(reported, peak, {}, "self-report" if reported is not None else "none")


def fmt_seconds(seconds: float | None) -> str:
    """A run time as docs/teaching.md writes it: whole seconds under 2 minutes, else minutes to 0.1."""
    if seconds is None:
        return "not recorded"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def announcement(nb: dict, index: int) -> tuple[float, float] | None:
    """(seconds, GB) announced in the markdown cell just above cell ``index``, or None."""
    above = nb["cells"][index - 1] if index > 0 else None
    if above is None or above["cell_type"] != "markdown":
        return None
    m = ANNOUNCE.search(_text(above["source"]))
    if not m:
        return None
    return float(m.group(1)) * (60 if m.group(2).startswith("min") else 1), float(m.group(3))


def long_cells(nb: dict, threshold: float = LONG_S) -> list[tuple[int, float, tuple[float, float] | None]]:
    """(index, seconds, announcement) for each cell over ``threshold`` seconds in the records."""
    run = notebook_run(nb)
    return [(i, s, announcement(nb, i)) for i, s in sorted(run.cells.items()) if s > threshold]


def unannounced(nb: dict, threshold: float = LONG_S) -> list[tuple[int, float, str]]:
    """The long cells whose announcement is missing or off by more than a factor of two: (index, seconds, why)."""
    bad = []
    for index, seconds, said in long_cells(nb, threshold):
        if said is None:
            bad.append((index, seconds, "no '⏱ about <time>, <memory> GB' line in the markdown cell above"))
        elif not 0.5 <= seconds / said[0] <= 2:
            bad.append((index, seconds, f"announced {said[0]:.0f} s, ran {seconds:.0f} s"))
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/timing.py", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if a long cell is not announced")
    parser.add_argument("--table", action="store_true", help="print the run-time and peak-RAM cells of "
                        "docs/teaching.md's agenda, one row per notebook")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.table:
        for path in paths:
            run = notebook_run(json.loads(path.read_text()))
            peak = f"{run.peak_gb} GB" if run.peak_gb else "not recorded"
            print(f"| {path.stem[:2]} | {fmt_seconds(run.seconds)} | {peak} |")
        return 0
    failures = 0
    for path in paths:
        nb = json.loads(path.read_text())
        run = notebook_run(nb)
        total = f"{run.seconds:.0f} s" if run.seconds is not None else "no record"
        peak = f", peak {run.peak_gb} GB" if run.peak_gb else ""
        print(f"{path.name}: {total}{peak} ({run.source})")
        for index, seconds, said in long_cells(nb):
            print(f"   cell {index}: {seconds:.0f} s" + (f", announced {said[0]:.0f} s / {said[1]} GB" if said else ""))
        bad = unannounced(nb)
        failures += len(bad)
        for index, seconds, why in bad if args.check else []:
            print(f"   NOT ANNOUNCED cell {index} ({seconds:.0f} s): {why}")
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
