"""Notebook 05 writes the article's training loop out in one cell; this pins it to ``ftlib.train``.

The test runs the notebook's own cell (found by its ``article-loop`` tag), so the loop a learner reads and the loop
ftlib runs cannot drift apart unnoticed."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import pytest
import torch

from ftlib.batching import make_dataloader
from ftlib.lora import add_lora
from ftlib.tiny import tiny_llama
from ftlib.train import TrainConfig, train

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "05_sft.ipynb"


def article_train():
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if "article-loop" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, "notebook 05 must have exactly one cell tagged article-loop"
    namespace = {"torch": torch, "device": torch.device("cpu")}
    exec("".join(cells[0]["source"]), namespace)
    return namespace["article_train"]


def samples(n: int = 96, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(8, 40, (1,), generator=g))
        ids = torch.randint(3, 200, (length,), generator=g).tolist()
        prompt = length // 3
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


@pytest.mark.parametrize("strategy", ["packed", "dynamic"])
def test_notebook_loop_and_ftlib_train_give_the_same_losses(tmp_path, strategy):
    torch.manual_seed(0)
    base = add_lora(tiny_llama(vocab_size=256, hidden_size=32), r=4, alpha=8)  # LoRA: as in the notebook
    for p in base.parameters():  # B starts at zero; give it a value so the adapters matter from step 1
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    data = datasets.Dataset.from_list(samples())
    loader = make_dataloader(data, strategy, 4, 64, seed=0, pad_token_id=0)
    steps, lr = 5, 1e-2
    notebook_losses = article_train()(a, loader, steps=steps, lr=lr)
    result = train(b, loader, TrainConfig(output_dir=str(tmp_path), max_steps=steps, learning_rate=lr,
                                          warmup_steps=0, schedule="cosine", bf16=False, progress=False,
                                          save_final=False))
    ftlib_losses = [r["loss"] for r in result.history]
    assert len(notebook_losses) == steps
    assert notebook_losses == pytest.approx(ftlib_losses, rel=1e-5, abs=1e-6)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        # ftlib's frozen-head loss sums each row's gradient in another order than autograd does on full logits
        # (fp32, exact in maths); AdamW turns that rounding into weight differences of a few 1e-6 at lr 1e-2 (a step
        # is ~1e-2): allow 2e-5, a thousandth of a step
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=2e-5, msg=name)
    moved = [not torch.equal(pa, p0) for pa, p0 in zip(a.parameters(), base.parameters()) if p0.requires_grad]
    assert all(moved)  # every trained tensor changed: the comparison is not between two no-ops
