"""Slides from the course notebooks: slide metadata on every cell, speaker notes, and offline reveal.js decks.

    python tools/slides.py mark [NOTEBOOK ...]            # set metadata.slideshow on every cell, in place
    python tools/slides.py mark --notes tools/speaker_notes.yaml notebooks/*.ipynb   # and add speaker notes
    python tools/slides.py render [--out build/slides] [NOTEBOOK ...]   # `make slides`

mark is idempotent (a second run changes no byte) and only touches ``metadata.slideshow`` and the notes cells it
owns (tag ``speaker-notes``). The rules: a markdown cell with a "# " or "## " heading starts a slide; other
markdown a subslide; code cells, and the "What to notice" right after them, appear as fragments; the PROFILE
cell and import-only cells are skipped; speaker-notes cells are notes (reveal's speaker view, key S).
render marks a temporary copy (the committed notebooks need not carry the metadata yet), then runs nbconvert's
slides exporter with reveal.js, require.js and MathJax from the npm registry in ``<out>/assets`` (pinned
below), so a deck opens with no network: no CDN.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# reveal.js 4.x: the major nbconvert's reveal template targets
NPM = ("reveal.js@4.6.1", "requirejs@2.3.8", "mathjax@2.7.9", "jquery@3.7.1")
TEMPLATE = ROOT / "tools" / "slides_offline.html.j2"
NOTES_TAG = "speaker-notes"


class SlidesError(Exception):
    """Something the user must fix (said in one line, exit code 2)."""


IMPORT_LINE = re.compile(r"^\s*(import\s|from\s\S+\simport\s|#|$)")


def _text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _has_section_heading(markdown: str) -> bool:
    """A "# " or "## " line outside fenced code (where "# " is a shell or Python comment)."""
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and line.startswith(("# ", "## ")):
            return True
    return False


def slide_type(cell: dict, previous: dict | None) -> str:
    """The reveal.js role of one cell (module docstring)."""
    text = _text(cell).lstrip()
    if NOTES_TAG in cell.get("metadata", {}).get("tags", []):
        return "notes"
    if cell["cell_type"] == "code":
        if "FTLIB_PROFILE" in text and text.count("\n") <= 3 or all(IMPORT_LINE.match(x) for x in text.splitlines()):
            return "skip"
        return "fragment"
    if cell["cell_type"] != "markdown":
        return "skip"
    if _has_section_heading(text):
        return "slide"  # a section starts here, even below a "What to notice" that shares its cell
    notice = text.startswith(("What to notice", "<details><summary>What to notice"))
    if notice and previous is not None and previous["cell_type"] == "code":
        return "fragment"
    return "subslide"


def _notes_cell(cell_id: str) -> dict:
    from nbformat import from_dict

    return from_dict({"cell_type": "markdown", "id": cell_id, "metadata": {"tags": [NOTES_TAG]}, "source": ""})


def add_notes(nb: dict, notes: dict[str, str]) -> int:
    """Put a speaker-notes cell after each markdown cell with a line starting with a key of ``notes``
    (replacing the one already there: idempotent). Returns how many notes cells the notebook now has."""
    cells, out, count = nb["cells"], [], 0
    for i, cell in enumerate(cells):
        if NOTES_TAG in cell.get("metadata", {}).get("tags", []):
            continue  # rebuilt below from the notes file (or kept if its heading has no note there)
        out.append(cell)
        lines = _text(cell).splitlines() if cell["cell_type"] == "markdown" else []
        key = next((k for k in notes if any(line.startswith(k) for line in lines)), None)
        following = cells[i + 1] if i + 1 < len(cells) else None
        old = following if following and NOTES_TAG in following.get("metadata", {}).get("tags", []) else None
        if key is None and old is not None:
            out.append(old)
        elif key is not None:
            note = old if old else _notes_cell(f"notes-{len(out):03d}")
            note["source"] = notes[key].strip()
            out.append(note)
        count += key is not None or old is not None
    nb["cells"] = out
    return count


def mark(nb: dict, notes: dict[str, str] | None = None) -> dict:
    """Set ``metadata.slideshow.slide_type`` on every cell (adding notes cells first when given)."""
    if notes:
        add_notes(nb, notes)
    previous = None
    for cell in nb["cells"]:
        kind = slide_type(cell, previous)
        cell.setdefault("metadata", {})["slideshow"] = {"slide_type": kind}
        if kind != "notes":
            previous = cell
    return nb


def mark_file(path: Path, notes: dict[str, str] | None = None) -> bool:
    """Mark one notebook in place, written as nbformat writes it; returns whether it changed."""
    import nbformat

    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    mark(nb, notes)
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after)
    return after != before


def install_assets(out: Path) -> Path:
    """reveal.js, require.js and MathJax from npm into ``<out>/assets`` (once); returns node_modules."""
    modules = out / "assets" / "node_modules"
    if not all((modules / name.split("@")[0] / "package.json").is_file() for name in NPM):
        if shutil.which("npm") is None:
            raise SlidesError("make slides needs npm (Node.js) once, to fetch reveal.js: apt-get install npm")
        (out / "assets").mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(out / "assets"),
                        *NPM], check=True, stdout=subprocess.DEVNULL)
    return modules


def render(notebooks: list[Path], out: Path, notes: dict[str, str] | None = None) -> list[Path]:
    """One offline reveal.js deck per notebook in ``out``: <name>.slides.html beside assets/."""
    install_assets(out)
    prefix = "assets/node_modules"
    flags = [f"--SlidesExporter.reveal_url_prefix={prefix}/reveal.js",
             f"--SlidesExporter.require_js_url={prefix}/requirejs/require.js",
             f"--SlidesExporter.mathjax_url={prefix}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
             f"--SlidesExporter.jquery_url={prefix}/jquery/dist/jquery.min.js",
             f"--template-file={TEMPLATE}", "--SlidesExporter.reveal_scroll=True",
             "--SlidesExporter.reveal_theme=white"]  # white: its fonts are in the package; simple imports Google Fonts
    decks = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in notebooks:
            copy = Path(tmp) / path.name
            shutil.copy(path, copy)
            mark_file(copy, notes)
            subprocess.run([sys.executable, "-m", "nbconvert", "--to", "slides", *flags, "--output-dir", str(out),
                            str(copy)], check=True, capture_output=True)
            decks.append(out / f"{path.stem}.slides.html")
    return decks


def load_notes(path: Path | None) -> dict[str, dict[str, str]]:
    """Speaker notes: {notebook stem: {heading line prefix: note}} from a YAML file."""
    if path is None:
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/slides.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["mark", "render"])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--notes", type=Path, help="speaker notes YAML (default tools/speaker_notes.yaml)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "slides")
    args = parser.parse_intermixed_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    missing = [str(p) for p in [*notebooks, *([args.notes] if args.notes else [])] if not p.is_file()]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    default = ROOT / "tools" / "speaker_notes.yaml"
    notes = load_notes(args.notes or (default if default.is_file() else None))
    if args.command == "mark":
        changed = [p.name for p in notebooks if mark_file(p, notes.get(p.stem))]
        print(f"slide metadata: {len(changed)} of {len(notebooks)} notebooks changed {changed}")
    else:
        decks = []
        try:
            for path in notebooks:
                decks += render([path], args.out, notes.get(path.stem))
        except SlidesError as e:
            print(e, file=sys.stderr)
            return 2
        print(f"{len(decks)} decks in {args.out}: open one in a browser (S: speaker notes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
