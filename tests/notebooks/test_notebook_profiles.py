"""Notebooks 05, 06, 08, 09 and 10 under the ``tiny`` profile: the hub-gpu control flow (base model without a chat
template, full fine-tuning, saving, chatting with the result, DPO on 05's model, evaluating both) on random-weight
models of a few MB, on every CI run.

nbval runs the notebooks with the offline profile and compares checked cells; this test only executes them
top to bottom under another profile, so a path that the offline run never takes cannot rot unnoticed."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ftlib.sft import load_config

pytestmark = pytest.mark.slow  # the unit-slow job of `make test` (subprocesses, real models, minutes)

REPO = Path(__file__).resolve().parents[2]


def _tiny_kernels(monkeypatch) -> None:
    """Kernels started from here run the tiny profile and import this checkout's ftlib."""
    monkeypatch.setenv("FTLIB_PROFILE", "tiny")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_notebooks_05_and_06_run_under_the_tiny_profile(tiny_course, monkeypatch):
    notebooks, executed_05 = tiny_course  # 05 executed under the tiny profile (tests/conftest.py)
    _tiny_kernels(monkeypatch)
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
    _tiny_kernels(monkeypatch)
    monkeypatch.setenv("FTLIB_TRAIN", "0")
    subprocess.run([sys.executable, "-m", "ftlib.sft", "--config", "../configs/sft-chat.yaml"], cwd=notebooks,
                   check=True, capture_output=True)
    nb = nbformat.read(REPO / "notebooks" / "05_sft.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "TRAIN = False: loaded the prepared run in outputs/sft-chat-tiny (3 steps)" in text
    assert "sft: 100%" not in text  # no training bar: nothing was trained
    assert "3 steps," in text  # the loss-curve cell read the prepared metrics


def _execute(notebooks: Path, name: str):
    nb = nbformat.read(notebooks / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_notebooks_08_and_09_run_on_the_tiny_05_model(tiny_course, monkeypatch):
    """One model through the course: 08 starts from the model 05 saved for the active profile and saves its own;
    09 evaluates both. Neither falls back to another model."""
    notebooks, _ = tiny_course
    _tiny_kernels(monkeypatch)
    text_08 = _execute(notebooks, "08_dpo.ipynb")
    assert "notebook 05's model loaded from outputs/sft-chat-tiny/final" in text_08
    # 05's replies are read back, not generated again: the saved model is the one 05 asked (ftlib.reply_cache)
    assert re.search(r"read back from notebook 05's run: (\d+) of \1 replies\n", text_08)
    assert re.search(r"05's model: (\d+) of \1 replies read back from notebook 05's run", text_08)
    dpo_final = notebooks / "outputs" / "dpo-tiny" / "final"
    assert (dpo_final / "model.safetensors").exists() and (dpo_final / "chat_template.jinja").exists()
    text_09 = _execute(notebooks, "09_evaluate.ipynb")
    assert "'05 SFT': 'outputs/sft-chat-tiny/final', '08 DPO': 'outputs/dpo-tiny/final'" in text_09
    assert re.search(r"replies read back \(asked before, by notebooks 05 and 08\): (\d+) of \1 held-out, "
                     r"0 of \d+ MT-Bench", text_09)
    assert len(re.findall(r"replies read back (\d+) of \1\n", text_09)) == 2  # both models' short answers


@pytest.mark.slow
def test_notebook_10_runs_under_the_tiny_profile(tiny_course, monkeypatch):
    """The pad = eos experiment on the tiny profile's instruct model: two fine-tunes and every measure."""
    notebooks, _ = tiny_course
    _tiny_kernels(monkeypatch)
    text = _execute(notebooks, "10_pad_eos.ipynb")
    assert "profile tiny: the instruct model 'tiny-instruct'" in text
    assert re.search(r"labels that differ over the whole set: (\d+) \(one per sample, \1 samples\)", text)


@pytest.mark.slow
@pytest.mark.parametrize("name, says", [("08_dpo.ipynb", "run notebook 05 with PROFILE='tiny' first"),
                                        ("09_evaluate.ipynb", "run notebook 05 (it fine-tunes the base model")])
def test_without_05_s_model_08_and_09_say_how_to_make_it(tmp_path, monkeypatch, name, says):
    from nbclient.exceptions import CellExecutionError

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (tmp_path / "configs").symlink_to(REPO / "configs")
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if "FileNotFoundError" in c.source)
    nb.cells = nb.cells[:setup + 1]  # up to the set-up cell that looks for 05's model
    _tiny_kernels(monkeypatch)
    with pytest.raises(CellExecutionError) as error:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(notebooks)}}).execute()
    assert "FileNotFoundError" in str(error.value) and says in str(error.value)
