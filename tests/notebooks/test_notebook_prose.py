"""A notebook's prose may only quote measured numbers that its own saved outputs show.

Notebooks are re-executed; prose is not. A sentence that says "about 10 %" beside an output of 5.36 % misleads
the reader, so every *measured-looking* number in a markdown cell must appear in that notebook's saved outputs.

What counts as a measured number (a claim): digits followed by a unit — ``%``, ``x``/``×``, ``s``/``sec``/
``seconds``, ``min``/``minutes``, ``ms``, ``GB``/``GiB``/``MB``/``MiB``, ``tok/s``/``tokens/s``, ``steps``,
``batches`` — a number word before ``times`` and a comparative ("five times fewer"), and a decimal number within
four words after "loss". A size of hardware ("a 24 GB card", "80 GB GPU") is not a claim. Numbers inside inline
code or code blocks are code, not claims.

A claim holds when the outputs (stdout/stderr, ``text/plain``, HTML and markdown outputs) contain a number that
equals it at the precision written: "5.4 %" is matched by an output of 5.36 %, "81 %" by "81%" or "80.6%";
thousands separators are ignored ("1,000" = "1000"). A claim is exempt when

* its sentence cites where the number comes from: ``docs/...``, a ``*.md`` file, "benchmark", "paper",
  "et al", "arXiv", "the article" (the source article's own settings and figures) or another notebook
  ("notebook 07 measures both"; that notebook's own prose test then covers the number if it repeats it), or
* it is a long cell's announcement (``⏱ about 4 minutes, 5 GB: ...``), whose figures tests/test_timing.py checks
  against the notebook's execution records, or
* it is marked as not from this run with the explicit convention ``<!-- not measured -->``: an HTML comment,
  invisible when rendered, inside the same sentence (before its full stop). Use it for arithmetic ("16 bytes
  per parameter, 19.8 GB") and general facts, and say so in the words too; a machine's timings belong in the
  outputs or in ``docs/benchmarks.md``, not in prose.
"""
from __future__ import annotations

import html
import math
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
MARKER = "<!-- not measured -->"
CITES = re.compile(r"docs/|\w\.md\b|benchmark|paper|et al|arxiv|the article|notebook \d\d (?:measures|shows)",
                   re.IGNORECASE)
NUMBER = r"(?<![\w.,/-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
UNIT = (r"\s?(%|×(?!\s?\d)|x(?![\w-]|\s\d)|tok/s|tokens/s|ms\b|s\b|sec\b|seconds?\b|min\b|minutes?\b|"
        r"GB\b|GiB\b|MB\b|MiB\b|steps?\b|batches\b)")
WITH_UNIT = re.compile(NUMBER + UNIT)
# "3.5–3.8×": the first number is a claim too
RANGE = re.compile(NUMBER + r"\s?(?:-|–|to)\s?" + r"(\d+(?:\.\d+)?)" + UNIT)
AFTER_LOSS = re.compile(r"\bloss(?:es)?\b(?:\W+\w+){0,4}?\W+(\d+\.\d+)", re.IGNORECASE)
WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
TIMES = re.compile(r"\b(" + "|".join(WORDS) + r")\s+times\s+(?:fewer|more|less|faster|slower|larger|smaller|as)\b",
                   re.IGNORECASE)
HARDWARE = re.compile(r"\s?(?:cards?|GPUs?)\b")  # "a 24 GB card": a size of hardware, not a measurement
OUTPUT_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)")


def _prose(markdown: str) -> str:
    """Markdown without code (blocks and inline) and with links reduced to their text."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    text = re.sub(r"`([^`]*)`", lambda m: m.group(1) if CITES.search(m.group(1)) else " CODE ", text)
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?:;])\s+(?=[A-Z*(<])|\n\s*[-*] ", " ".join(paragraph.split("\n"))) if s]


def claims(markdown: str) -> list[tuple[str, str]]:
    """``(number as written, sentence)`` for every measured-looking number that is not exempt."""
    found = []
    for paragraph in re.split(r"\n\s*\n", markdown):
        for sentence in _sentences(_prose(paragraph)):
            if CITES.search(sentence):
                continue
            if MARKER in sentence or sentence.lstrip().startswith("⏱"):
                continue  # ⏱ announces a long cell from the execution records (tests/test_timing.py checks it)
            numbers = [m.group(1) for m in WITH_UNIT.finditer(sentence) if not HARDWARE.match(sentence, m.end())]
            numbers += [n for m in RANGE.finditer(sentence) for n in m.groups()[:2]]
            numbers += [m.group(1) for m in AFTER_LOSS.finditer(sentence)]
            numbers += [str(WORDS[m.group(1).lower()]) for m in TIMES.finditer(sentence)]
            found += [(n, sentence.strip()) for n in dict.fromkeys(numbers)]
    return found


def output_text(nb) -> str:
    """Everything a reader sees in the saved outputs, as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            for mime in ("text/plain", "text/markdown", "text/html"):
                value = out.get("data", {}).get(mime)
                if value:
                    parts.append(html.unescape(re.sub(r"<[^>]+>", " ", value)) if mime == "text/html" else value)
    return "\n".join(parts)


def _value(number: str) -> float:
    return float(number.replace(",", ""))


def supported(number: str, outputs: str) -> bool:
    """Does an output number equal ``number`` at the precision it is written with?"""
    digits = len(number.split(".")[1]) if "." in number else 0
    want = _value(number)
    for m in OUTPUT_NUMBER.finditer(outputs):
        got = _value(m.group(1))
        if math.isclose(round(got, digits), want, abs_tol=10 ** -(digits + 3)):
            return True
    return False


def violations(nb) -> list[str]:
    """One line per quoted number the outputs do not show: cell index, the number, the sentence."""
    outputs = output_text(nb)
    return [f"cell {i}: {number!r} not in the outputs: {sentence}"
            for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
            for number, sentence in claims(cell.source) if not supported(number, outputs)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_quotes_only_numbers_its_outputs_show(path):
    found = violations(nbformat.read(path, as_version=4))
    assert not found, f"{path.name}: prose numbers not in the saved outputs (see this test's docstring):\n" + \
        "\n".join(found)


def _notebook(markdown: str, output: str):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(...)")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), code]
    return nb


@pytest.mark.parametrize("markdown", [
    "Padding wastes about 10 % of the tokens.",
    "Training took 42 s on this machine.",
    "The loss fell to 1.84 after training.",
    "Packing needs five times fewer steps.",
    "LoRA trains 2.5x faster.",
    "It uses 3.1 GB of memory.",
    "LoRA cuts the memory 1.4-3.8x here.",
    "It uses 3.1 GB of memory. <!-- not measured --> A marker only covers its own sentence.",
])
def test_a_number_the_outputs_do_not_show_is_reported(markdown):
    output = "real tokens 7.36%  time 12.5 s  loss 2.10  batches 250 vs 51  speed-up 1.4x  peak 0.9 GB"
    assert len(violations(_notebook(markdown, output))) == 1


@pytest.mark.parametrize("markdown", [
    "Padding wastes about 7.4 % of the tokens.",  # rounded at the precision written
    "Padding wastes 7 % of the tokens, and `max_length=512` is a setting.",
    "Training took 12.5 s; the loss fell to 2.1 and the speed-up is 1.4×.",
    "Packing needs 51 batches instead of 250 batches.",
    "The article trains for 3 epochs at 1024 tokens and reports 40 % MFU.",
    "Typical timings are in `docs/benchmarks.md`: 95 s for 200 tokens.",
    "A 7B model in bf16 is 14 GB of weights <!-- not measured -->. The loss fell to 2.1.",
    "Temperature 0.5 and top-k 50 are settings, not measurements.",
    "On a 24 GB card, halve the batch; repeat the list three times.",
    "Two batches compute 8 × 1024 tokens; q_proj is 32 x 32.",  # products and shapes, not ratios
])
def test_numbers_shown_cited_or_marked_pass(markdown):
    output = "real tokens 7.36%  time 12.5 s  loss 2.10  batches 250 vs 51  speed-up 1.4x  peak 0.9 GB"
    assert violations(_notebook(markdown, output)) == []
