"""`make test` runs every notebook: the job list comes from the folder, and this checks it against the files."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def jobs() -> dict[str, list[str]]:
    """`make print-jobs` parsed: job -> what it runs; "order" -> the jobs of `make test`, in order."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "print-jobs"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return {name: rest.split() for name, _, rest in (line.partition(": ") for line in out.splitlines())}


def test_every_notebook_and_solutions_notebook_is_in_exactly_one_job():
    listed = jobs()
    targets = [Path(t) for job, ts in listed.items() if job.startswith("nb-") for t in ts]
    notebooks = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("notebooks/solutions/*.ipynb"))
    assert len(notebooks) >= 20
    assert all((ROOT / t).exists() for t in targets), "a job runs a notebook that is not there"
    for nb in notebooks:
        rel = nb.relative_to(ROOT)
        covering = [t for t in targets if t == rel or t in rel.parents]
        assert len(covering) == 1, f"{rel} is run by {len(covering)} jobs of `make test` ({covering})"


def test_make_test_runs_every_job_once_longest_first():
    listed = jobs()
    order = listed.pop("order")
    assert sorted(order) == sorted(listed), "a job is missing from TEST_JOBS or listed twice"
    assert order[:2] == ["nb-chain", "unit-slow"]  # the two longest (docs/benchmarks.md), so they start at once
    assert order[-1] == "nb-06_chat"  # it waits for the chain's 05 (a stamp): last, so it holds no slot idle early
    assert "notebooks/05_sft.ipynb" == listed["nb-chain"][0]  # the chain starts with 05, whose model the others load
    assert {"unit-slow", "unit-rest"} <= set(order)


def test_torch_is_pinned_in_one_place():
    pins = [line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"torch==' in line]
    assert len(pins) == 1
    assert re.search(r"torch==\d", (ROOT / "Makefile").read_text()) is None, "the Makefile reads the pin"


def test_the_chain_kernel_takes_a_second_thread_once_the_other_slot_is_done(tmp_path, monkeypatch):
    """tools/two_threads_when_alone.py, loaded as the chain's kernels load it (an IPython start-up file in a private
    IPYTHONDIR): one thread until the stamp exists, two soon after - inside the cell that is running then - and not
    a character of output."""
    import nbformat
    from nbclient import NotebookClient

    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "two_threads_when_alone.py", startup)
    stamp = tmp_path / "others.ended"
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("FTLIB_ALONE_STAMP", str(stamp))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    long_cell = ("import time\nseen = [torch.get_num_threads()]\n"
                 f"open({str(stamp)!r}, 'w').close()\n"
                 "deadline = time.monotonic() + 20\n"
                 "while torch.get_num_threads() < 2 and time.monotonic() < deadline:\n"
                 "    sum(range(10_000))  # busy in Python, as a long cell is: no new cell starts meanwhile\n"
                 "print(seen[0], torch.get_num_threads())")
    cells = ["import torch\nprint(torch.get_num_threads())", long_cell, "print(torch.get_num_threads())", "x = 1"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    printed = [[o.get("text", "") for o in c.outputs] for c in nb.cells]
    assert printed == [["1\n"], ["1 2\n"], ["2\n"], []]  # switched inside the cell that made the stamp
