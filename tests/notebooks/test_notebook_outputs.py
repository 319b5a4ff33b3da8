"""What notebooks save: training bars end on their finished state, and no warnings about library internals.

A notebook executed headless (nbconvert, nbval, CI) saves tqdm.auto's widget as its first frame, "0%", so the
committed notebook shows a bar that never moved; ftlib's training loops use a text bar whose saved text ends on
its last frame (``FTLIB_FINISHED_BARS=1``, set for the runs whose outputs are committed: ``ftlib.progress``).
These tests read the saved outputs the way a notebook viewer shows them (carriage returns
overwrite the line), and run one tiny training in a real kernel to check what a headless run saves."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
REFRESHED = ("04_chat_samples", "05_sft", "07_lora", "08_dpo", "09_evaluate", "10_pad_eos")  # refreshed with finished bars
BAR = re.compile(r"(\d+)%\|")


def text_of(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)  # saved notebooks split text into lines


def shown_streams(outputs: list[dict]) -> str:
    """Stream text as a viewer shows it: each stream (stdout, stderr) joined, each line after its last \\r."""
    lines = []
    for name in ("stdout", "stderr"):
        text = "".join(text_of(o["text"]) for o in outputs if o.get("output_type") == "stream" and o["name"] == name)
        lines += [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(lines)


def unfinished_bars(outputs: list[dict]) -> list[str]:
    """Progress bars in these outputs that are saved short of 100 % (widgets: their text fallback)."""
    texts = [shown_streams(outputs)]
    texts += [text_of(o["data"].get("text/plain", "")) for o in outputs if "data" in o]
    return [line for text in texts for line in text.splitlines() if (m := BAR.search(line)) and m.group(1) != "100"]


@pytest.mark.parametrize("name", REFRESHED)
def test_saved_outputs_show_finished_bars_and_no_warnings(name):
    cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert not [line for c in code for line in unfinished_bars(c["outputs"])]
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert not [o["text"] for o in outputs if o.get("name") == "stderr" and "Warning" in text_of(o["text"])]


def test_a_training_bar_executed_headless_is_saved_finished(monkeypatch):
    code = """
import torch
from ftlib.tiny import tiny_llama
from ftlib.train import TrainConfig, train
batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "labels": torch.tensor([[1, 2, 3, 4]])}
train(tiny_llama(vocab_size=16), [batch] * 3, TrainConfig(output_dir=OUT, max_steps=3, save_final=False, bf16=False))
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import tempfile\nOUT = tempfile.mkdtemp()\n" + code)]
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # this ftlib
    monkeypatch.setenv("FTLIB_FINISHED_BARS", "1")  # as for every run whose outputs are committed
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert "3/3" in shown_streams(outputs) and "100%|" in shown_streams(outputs)
    assert not unfinished_bars(outputs)
