"""Before and after a class: `make student` writes the learners' copy, `make reset` puts the course back.

    python tools/classroom.py student [--root .] [--out build/student]
    python tools/classroom.py reset   [--root .]

student: copies the course notebooks (notebooks/*.ipynb, **not** notebooks/solutions/) and configs/ into
build/student/, clears every output and execution count with nbstripout (a maintained tool, pinned in
pyproject's dev extras), and folds each "What to notice" cell into a <details> block that JupyterLab shows closed
until clicked, so learners predict before they read. reset: `git checkout -- notebooks/` (the committed notebooks
and their reference outputs come back) and `git clean` of everything untracked under notebooks/ (outputs/, saved
models, checkpoints, student copies), then removes build/student and build/slides.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

NOTICE = "What to notice"
BUILD_DIRS = ("build/student", "build/slides")


def fold(source: str) -> str:
    """A markdown cell starting with "What to notice" as a folded <details> block (idempotent)."""
    if not source.startswith(NOTICE):
        return source
    body = source[len(NOTICE):].lstrip(":").strip()
    return f"<details><summary>{NOTICE}</summary>\n\n{body}\n\n</details>"


def fold_notebook(path: Path) -> int:
    """Fold the "What to notice" cells of one notebook in place; returns how many were folded."""
    nb = json.loads(path.read_text())
    folded = 0
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown" and source.startswith(NOTICE):
            cell["source"] = fold(source)
            folded += 1
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return folded


def student(root: Path, out: Path) -> list[Path]:
    """Write the learners' copy under ``out``: notebooks without solutions or outputs, notices folded, configs."""
    if out.exists():
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    notebooks = [shutil.copy2(nb, out / "notebooks" / nb.name) for nb in sorted((root / "notebooks").glob("*.ipynb"))]
    if (root / "configs").is_dir():  # the notebooks read ../configs/sft-chat.yaml
        shutil.copytree(root / "configs", out / "configs")
    paths = [Path(p) for p in notebooks]
    subprocess.run([sys.executable, "-m", "nbstripout", *map(str, paths)], check=True)
    for path in paths:
        fold_notebook(path)
    (out / "README.md").write_text(
        "# The course, learners' copy\n\nOutputs are cleared: run each notebook top to bottom. Each \"What to "
        "notice\" is folded: make your prediction, then click it open. The solutions are not in this copy; the "
        "instructor hands them out after the exercises.\n\nThe notebooks import the `ftlib` package: install it from "
        "the course repository (`pip install -e .` there, or `make lab`) and fetch the offline models and data once "
        "with `python -m ftlib.assets fetch`.\n")
    return paths


def reset(root: Path) -> None:
    """Restore the committed notebooks and remove what runs and `make student` / `make slides` wrote."""
    subprocess.run(["git", "-C", str(root), "checkout", "--", "notebooks/"], check=True)
    subprocess.run(["git", "-C", str(root), "clean", "-fdxq", "--", "notebooks/"], check=True)
    for folder in BUILD_DIRS:
        shutil.rmtree(root / folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/classroom.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["student", "reset"])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the course folder")
    parser.add_argument("--out", type=Path, help="student copy folder (default <root>/build/student)")
    args = parser.parse_args(argv)
    if not (args.root / "notebooks").is_dir():
        print(f"{args.root}: no notebooks/ folder here", file=sys.stderr)
        return 2
    if args.command == "reset":
        reset(args.root)
        print(f"reset: {args.root / 'notebooks'} is as committed; {', '.join(BUILD_DIRS)} removed")
    else:
        out = args.out or args.root / "build" / "student"
        paths = student(args.root, out)
        print(f"student copy: {len(paths)} notebooks in {out} (outputs cleared, 'What to notice' folded, "
              "no solutions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
