"""tools/slides.py: slide metadata on every cell (idempotent, nothing else touched), speaker notes, offline decks.

Run on temporary copies of the course notebooks, never on notebooks/ itself. The browser half (the deck shows its
slides with the network off) is tests/browser/test_slides_browser.py.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import slides  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
NOTES = {"# 05": "Ask first: what does a base model do with a question?", "## 4.": "Start the run, then talk."}


def without_slideshow(nb: dict) -> dict:
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        cell["metadata"].pop("slideshow", None)
    return nb


@pytest.fixture
def copies(tmp_path) -> list[Path]:
    """The course notebooks with their slide metadata taken off (the committed ones carry it)."""
    out = []
    for p in NOTEBOOKS:
        copy_path = tmp_path / p.name
        copy_path.write_text(json.dumps(without_slideshow(json.loads(p.read_text())), indent=1, ensure_ascii=False)
                             + "\n")
        out.append(copy_path)
    return out


def test_the_committed_notebooks_are_marked(tmp_path):
    """Marking a copy of a committed notebook changes nothing: `tools/slides.py mark` ran on the final notebooks."""
    for p in NOTEBOOKS:
        assert not slides.mark_file(Path(shutil.copy(p, tmp_path / p.name))), f"{p.name}: run tools/slides.py mark"


def test_every_cell_gets_a_slide_type_and_nothing_else_changes(copies):
    all_notices = []
    for path in copies:
        before = json.loads(path.read_text())
        assert slides.mark_file(path)
        after = json.loads(path.read_text())
        assert without_slideshow(after) == without_slideshow(before), path.name
        kinds = [c["metadata"]["slideshow"]["slide_type"] for c in after["cells"]]
        assert kinds[0] == "slide" and set(kinds) <= {"slide", "subslide", "fragment", "skip", "notes"}
        for cell, kind in zip(after["cells"], kinds):
            text = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and re.search(r"^##? ", text.split("```")[0], flags=re.M):
                assert kind == "slide"
            if "FTLIB_PROFILE" in text and cell["cell_type"] == "code" and text.count("\n") <= 3:
                assert kind == "skip"
        notices = [k for c, k, prev in zip(after["cells"][1:], kinds[1:], after["cells"])
                   if "".join(c["source"]).startswith("What to notice") and prev["cell_type"] == "code"
                   and not re.search(r"^##? ", "".join(c["source"]), flags=re.M)]
        assert set(notices) <= {"fragment"}, path.name
        all_notices += notices
        assert kinds.count("fragment") > kinds.count("skip"), path.name
    assert len(all_notices) > 10


def test_marking_twice_changes_no_byte(copies):
    for path in copies:
        slides.mark_file(path, NOTES)
        once = path.read_bytes()
        assert not slides.mark_file(path, NOTES) and path.read_bytes() == once, path.name


def test_speaker_notes_go_after_their_heading_once_and_follow_the_notes_file(copies):
    path = next(p for p in copies if p.name.startswith("05"))
    for _ in range(2):
        slides.mark_file(path, NOTES)
    cells = json.loads(path.read_text())["cells"]
    notes = [(i, "".join(c["source"])) for i, c in enumerate(cells)
             if slides.NOTES_TAG in c["metadata"].get("tags", [])]
    assert [text for _, text in notes] == list(NOTES.values())
    for i, _ in notes:
        assert cells[i]["metadata"]["slideshow"]["slide_type"] == "notes"
        assert re.search(r"^(# 05|## 4\.)", "".join(cells[i - 1]["source"]), flags=re.M)
    slides.mark_file(path, {"# 05": "changed"})  # a note edited: replaced; a note dropped from the file: kept
    cells = json.loads(path.read_text())["cells"]
    texts = ["".join(c["source"]) for c in cells if slides.NOTES_TAG in c["metadata"].get("tags", [])]
    assert texts == ["changed", NOTES["## 4."]]


def test_slide_types_of_typical_cells():
    code = {"cell_type": "code", "metadata": {}, "source": "model.train()"}
    assert slides.slide_type({"cell_type": "markdown", "source": "## 2. Data"}, None) == "slide"
    assert slides.slide_type({"cell_type": "markdown", "source": "What to notice: x\n\n## 3. Next"}, code) == "slide"
    assert slides.slide_type({"cell_type": "markdown", "source": "Next we pack."}, code) == "subslide"
    assert slides.slide_type({"cell_type": "markdown", "source": "What to notice: x"}, code) == "fragment"
    assert slides.slide_type({"cell_type": "markdown", "source": "<details><summary>What to notice</summary>"},
                             code) == "fragment"
    assert slides.slide_type({"cell_type": "markdown", "source": "Run:\n```bash\n# offline\nmake lab\n```"},
                             code) == "subslide"
    assert slides.slide_type(code, None) == "fragment"
    assert slides.slide_type({"cell_type": "code", "source": "import torch\n\nfrom ftlib import x\n"}, None) == "skip"
    assert slides.slide_type({"cell_type": "code", "source": 'import os\n\nPROFILE = os.environ.get("FTLIB_PROFILE")'},
                             None) == "skip"


@pytest.fixture(scope="module")
def deck(tmp_path_factory) -> Path:
    """Notebook 07 (it has LaTeX) rendered offline, with the npm assets: the deck's path."""
    if shutil.which("npm") is None:
        pytest.skip("no npm: make slides fetches reveal.js with it")
    out = tmp_path_factory.mktemp("slides")
    [path] = slides.render([ROOT / "notebooks" / "07_lora.ipynb"], out, {"# 07": "Say why rank matters."})
    return path


def test_deck_loads_nothing_from_the_network_and_every_local_asset_exists(deck):
    html = deck.read_text()
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', html) + re.findall(r"import \w+ from '([^']+)'", html)
    refs = [r for r in refs if not r.startswith("data:")]
    assert len(refs) >= 5 and not [r for r in refs if "//" in r], refs
    for ref in refs:
        assert (deck.parent / ref.split("?")[0]).is_file(), ref
    assert re.findall(r'"(assets/node_modules/[^"]+\.js)"', html)  # reveal.js and its notes plugin, via require
    for module in re.findall(r'"(assets/node_modules/[^"]+\.js)"', html):
        assert (deck.parent / module).is_file(), module
    theme = re.search(r'href="([^"]*theme/[^"]+\.css)"', html).group(1)
    assert not re.findall(r"@import url\((?:'|\")?https?:", (deck.parent / theme).read_text())


def test_deck_has_slides_fragments_and_speaker_notes(deck):
    html = deck.read_text()
    assert html.count("<section") > 5 and 'class="fragment"' in html
    assert '<aside class="notes">' in html and "Say why rank matters." in html


def test_render_without_npm_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(slides.shutil, "which", lambda name: None)
    assert slides.main(["render", "--out", str(tmp_path), str(NOTEBOOKS[0])]) == 2
    assert "needs npm" in capsys.readouterr().err
