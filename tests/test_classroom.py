"""`make student` and `make reset` (tools/classroom.py) on a temporary git copy of the course's notebooks folder."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "classroom.py"
sys.path.insert(0, str(ROOT / "tools"))
import classroom  # noqa: E402

pytest.importorskip("nbstripout")
EMPTY_NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def course(tmp_path) -> Path:
    """A git repository holding a copy of notebooks/ and configs/, committed."""
    repo = tmp_path / "course"
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns("outputs", ".ipynb_*"))
    shutil.copytree(ROOT / "configs", repo / "configs")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "course")
    return repo


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def notices(nb: dict) -> list[str]:
    texts = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    return [t for t in texts if t.startswith(classroom.NOTICE) or t.startswith("<details><summary>What to notice")]


def test_student_copy_has_no_outputs_no_solutions_and_folded_notices(course):
    assert cli("student", "--root", str(course)).returncode == 0
    out = course / "build" / "student"
    originals = sorted((course / "notebooks").glob("*.ipynb"))
    copies = sorted((out / "notebooks").glob("*.ipynb"))
    assert [p.name for p in copies] == [p.name for p in originals] and len(copies) == 11
    assert not (out / "notebooks" / "solutions").exists() and (out / "configs" / "sft-chat.yaml").is_file()
    assert any(c["outputs"] for c in json.loads(originals[5].read_text())["cells"] if c["cell_type"] == "code")
    for original, copy in zip(originals, copies):
        before, after = json.loads(original.read_text()), json.loads(copy.read_text())
        code = [c for c in after["cells"] if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), copy.name
        assert "widgets" not in after["metadata"]
        # same cells, same code; each notice folded with its text kept
        assert [c["cell_type"] for c in after["cells"]] == [c["cell_type"] for c in before["cells"]]
        folded, plain = notices(after), notices(before)
        assert len(folded) == len(plain) > 0, copy.name
        for f, p in zip(folded, plain):
            assert f.startswith("<details><summary>What to notice</summary>\n\n") and f.endswith("\n\n</details>")
            assert p[len("What to notice:"):].strip() in f
    assert "solutions are not in this copy" in (out / "README.md").read_text()


def test_fold_is_idempotent_and_leaves_other_cells():
    once = classroom.fold("What to notice: the loss *falls*.")
    assert once == "<details><summary>What to notice</summary>\n\nthe loss *falls*.\n\n</details>"
    assert classroom.fold(once) == once and classroom.fold("## 2 · Data") == "## 2 · Data"


def test_reset_restores_the_committed_notebooks_and_removes_what_runs_wrote(course):
    originals = {p: p.read_bytes() for p in (course / "notebooks").rglob("*.ipynb")}
    nb05 = course / "notebooks" / "05_sft.ipynb"
    nb = json.loads(nb05.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
    nb05.write_text(json.dumps(nb))
    (course / "notebooks" / "outputs" / "sft-chat-offline" / "final").mkdir(parents=True)
    (course / "notebooks" / "outputs" / "sft-chat-offline" / "final" / "model.safetensors").write_bytes(b"w")
    (course / "notebooks" / "scratch.ipynb").write_text(EMPTY_NOTEBOOK)
    assert cli("student", "--root", str(course)).returncode == 0
    (course / "build" / "slides").mkdir()
    (course / "build" / "keep.txt").write_text("not ours")
    assert cli("reset", "--root", str(course)).returncode == 0
    assert {p: p.read_bytes() for p in (course / "notebooks").rglob("*.ipynb")} == originals
    assert not (course / "notebooks" / "outputs").exists() and not (course / "notebooks" / "scratch.ipynb").exists()
    assert not (course / "build" / "student").exists() and not (course / "build" / "slides").exists()
    assert (course / "build" / "keep.txt").exists() and (course / "configs" / "sft-chat.yaml").exists()


def test_bad_root_is_one_line_and_exit_2(tmp_path):
    result = cli("reset", "--root", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no notebooks/" in result.stderr
