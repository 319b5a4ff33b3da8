"""Notebooks 05 and 06 under the ``tiny`` profile: the hub-gpu control flow (base model without a chat template,
full fine-tuning, saving, chatting with the result) on random-weight models of a few MB, on every CI run.

nbval runs the notebooks with the offline profile and compares checked cells; this test only executes them
top to bottom under another profile, so a path that the offline run never takes cannot rot unnoticed."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ftlib.sft import load_config

pytestmark = pytest.mark.slow  # the unit-slow job of `make test` (subprocesses, real models, minutes)

REPO = Path(__file__).resolve().parents[2]


def test_notebooks_05_and_06_run_under_the_tiny_profile(tiny_course, monkeypatch):
    notebooks, executed_05 = tiny_course  # 05 executed under the tiny profile (tests/conftest.py)
    monkeypatch.setenv("FTLIB_PROFILE", "tiny")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    executed_06 = nbformat.read(notebooks / "06_chat.ipynb", as_version=4)
    NotebookClient(executed_06, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(notebooks)}}).execute()
    final = notebooks / "outputs" / "sft-chat-tiny" / "final"
    # one source of truth: what 05 ran is what `python -m ftlib.sft --config configs/sft-chat.yaml` runs
    recorded = json.loads((final.parent / "run_config.json").read_text())["config"]
    cli = json.loads(json.dumps(dataclasses.asdict(load_config(REPO / "configs" / "sft-chat.yaml", "tiny"))))
    assert recorded == {"objective": "sft", **cli}
    assert (final / "model.safetensors").exists() and (final / "chat_template.jinja").exists()
    text = "".join(o.get("text", "") for c in executed_05.cells for o in c.get("outputs", []))
    assert "profile tiny: base model 'tiny-base', full fine-tuning" in text
    text = "".join(o.get("text", "") for c in executed_06.cells for o in c.get("outputs", []))
    assert "fine-tuned model loaded from outputs/sft-chat-tiny/final" in text


@pytest.mark.slow
def test_notebook_05_with_train_false_loads_what_make_prepare_made(tmp_path, monkeypatch):
    """The classroom path: `make prepare` (the CLI on 05's own config, run from notebooks/), then 05 with
    ``TRAIN = False``: it trains nothing, loads the prepared model and metrics, and every later cell runs."""
    import subprocess
    import sys

    prepare = subprocess.run(["make", "-n", "prepare"], cwd=REPO, capture_output=True, text=True).stdout
    assert "cd notebooks && ../.venv/bin/python -m ftlib.sft --config ../configs/sft-chat.yaml" in prepare
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.setenv("FTLIB_PROFILE", "tiny")
    monkeypatch.setenv("FTLIB_TRAIN", "0")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "ftlib.sft", "--config", "../configs/sft-chat.yaml"], cwd=notebooks,
                   check=True, capture_output=True)
    nb = nbformat.read(REPO / "notebooks" / "05_sft.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "TRAIN = False: loaded the prepared run in outputs/sft-chat-tiny (3 steps)" in text
    assert "sft: 100%" not in text  # no training bar: nothing was trained
    assert "3 steps," in text  # the loss-curve cell read the prepared metrics
