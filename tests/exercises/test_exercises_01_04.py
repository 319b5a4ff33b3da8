"""Exercises of notebooks 00-04: every worked solution passes its check, planted wrong answers fail with the right
sentence, and every exercise has a solutions notebook whose saved outputs show it passing."""
import json
from pathlib import Path

import pytest
import torch

from ftlib.course.exercises import all_exercises, exercise
from ftlib.course.exercises.nb03_04 import PADDING_LENGTHS, padding_fractions
from ftlib.templates import ARTICLE_CHAT_TEMPLATE

SOLUTIONS = Path(__file__).resolve().parents[2] / "notebooks" / "solutions"
KEYS = [k for k in all_exercises() if k[:2] in ("00", "01", "02", "03", "04")]


def verdict(key, answer) -> str:
    return repr(exercise(key).check(answer))


def passes(key, answer) -> None:
    v = exercise(key).check(answer)
    assert v, repr(v)
    assert repr(v).startswith(f"✓ {key} correct:")


def fails(key, answer, *fragments: str) -> None:
    text = verdict(key, answer)
    assert text.startswith(f"✗ {key}"), text
    for f in fragments:
        assert f in text, text


# ---------------------------------------------------------------- 00
def test_00_1_answer_ids():
    passes("00.1", lambda out, input_ids: out[0, input_ids.shape[1]:])
    fails("00.1", lambda out, input_ids: out[0], "still start with the 4 prompt tokens")
    fails("00.1", lambda out, input_ids: out[0, input_ids.shape[1]:-1], "dropped the last token, the EOS")


def test_00_2_finish_reason():
    passes("00.2", lambda ids, eos_id, n: "eos" if ids[-1] == eos_id else "length")
    fails("00.2", lambda ids, eos_id, n: "length" if len(ids) >= n else "eos", "even at the limit")
    fails("00.2", lambda ids, eos_id, n: "eos" if eos_id in ids else "length", "only the *last* token")


# ---------------------------------------------------------------- 01
def test_01_2_top_k():
    def right(logits, k):
        if k == 0:
            return logits
        return logits.masked_fill(logits < torch.topk(logits, k).values[..., -1:], float("-inf"))

    passes("01.2", right)
    fails("01.2", lambda logits, k: logits, "ignores top_k")
    fails("01.2", lambda logits, k: right(logits, k).nan_to_num(neginf=0.0) if k else logits, "-inf, not 0")
    fails("01.2", lambda logits, k: right(logits, k + 1), "with k=1, row 0 keeps 2 tokens where top-k keeps 1")
    fails("01.2", lambda logits, k: logits.masked_fill_(logits < logits.topk(max(k, 1)).values[..., -1:],
                                                        float("-inf")), "changed the logits in place")
    fails("01.2", lambda logits, k: right(logits, max(k, 1)), "top_k=0 means 'off'")
    fails("01.2", lambda logits, k: logits.masked_fill(logits < torch.topk(logits, k).values[..., -1:], float("-inf")),
          "top_k=0 means 'off'")  # raises at k=0: still the sentence, not a traceback
    fails("01.2", lambda logits, k: logits.masked_fill(  # ties broken: keeps exactly k by index
        torch.ones_like(logits, dtype=torch.bool).scatter(-1, logits.topk(max(k, 1)).indices, False), float("-inf")),
        "tied with the k-th logit")


def test_01_1_temperature():
    passes("01.1", lambda logits, t: logits / t)
    fails("01.1", lambda logits, t: logits * t, "at T=0.5 your distribution got flatter")
    fails("01.1", lambda logits, t: logits / t + 1, "differ from logits / T")


def test_01_3_top_p_prediction():
    passes("01.3", {0.5: 2, 1.0: 4, 2.0: 5})
    fails("01.3", {0.5: ..., 1.0: ..., 2.0: ...}, "not answered yet")
    fails("01.3", {0.5: 2, 1.0: 4, 2.0: 3}, "at T=2.0 top-p 0.9 keeps more tokens than 3")
    fails("01.3", {0.5: 2, 1.0: 4}, "T=2.0 is missing")


# ---------------------------------------------------------------- 02
def test_02_1_chat_prompt(tokenizer):
    system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    passes("02.1", lambda q: f"{system}<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
    passes("02.1", lambda q: tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                           add_generation_prompt=True))
    fails("02.1", lambda q: f"{system}<|im_start|>user\n{q}<|im_end|>\n", "generation prompt")
    fails("02.1", lambda q: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n", "default system turn")
    fails("02.1", lambda q: f"{system}<|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n",
          "at character 161 yours has '<|im_start|>assistan' where the template has '\\n<|im_start|>")


def test_02_2_stop_id(tokenizer):
    passes("02.2", tokenizer.convert_tokens_to_ids("<|im_end|>"))
    fails("02.2", 0, "'<|endoftext|>'", "pretraining document")
    fails("02.2", 1, "'<|im_start|>'", "opens")
    fails("02.2", "<|im_end|>", "as an int")


# ---------------------------------------------------------------- 03
def labels_right(prompt_ids, response_ids, eos_id):
    ids = prompt_ids + response_ids + [eos_id]
    return ids, [-100] * len(prompt_ids) + response_ids + [eos_id]


def test_03_1_instruction_labels():
    passes("03.1", labels_right)
    fails("03.1", lambda p, r, e: (p + r + [e], [-100] * len(p) + r + [-100]),
          "(the EOS) is -100: the model never learns to stop")
    fails("03.1", lambda p, r, e: (p + r, [-100] * len(p) + r), "lack the final EOS")
    fails("03.1", lambda p, r, e: (p + r + [e], p + r + [e]), "every prompt token is trained")
    fails("03.1", lambda p, r, e: (p + r + [e], [-100] * (len(p) - 1) + r + [e, -100]), "shifted by one")

    def my_sample(prompt_ids, response_ids, eos_id):
        ...  # as shipped

    fails("03.1", my_sample, "not answered yet: my_sample returns None")


def collate_right(samples, pad_id):
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id)
    labels = torch.full((len(samples), width), -100)
    for row, s in enumerate(samples):
        ids[row, :len(s["input_ids"])] = torch.tensor(s["input_ids"])
        labels[row, :len(s["labels"])] = torch.tensor(s["labels"])
    return {"input_ids": ids, "labels": labels}


def test_03_2_collate():
    def my_collate(samples, pad_id):  # the planted bug, exactly as shipped in notebook 03
        """Right-pad samples to the longest one; padding is -100 in the labels."""
        width = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), width), pad_id)
        labels = torch.full((len(samples), width), pad_id)
        for row, s in enumerate(samples):
            input_ids[row, : len(s["input_ids"])] = torch.tensor(s["input_ids"])
            labels[row, : len(s["labels"])] = torch.tensor(s["labels"])
        labels[labels == pad_id] = -100  # mask the padding
        return {"input_ids": input_ids, "labels": labels}

    def no_mask(samples, pad_id):
        batch = collate_right(samples, pad_id)
        batch["labels"] = torch.where(batch["labels"] == -100, batch["input_ids"], batch["labels"])
        return batch

    passes("03.2", collate_right)
    fails("03.2", my_collate, "row 0, position 4 (the EOS) is -100", "mask by position")
    fails("03.2", no_mask, "labels[0, 0] is 1, expected -100")


def test_03_3_padding_prediction():
    fractions = padding_fractions(PADDING_LENGTHS)
    assert fractions == pytest.approx({"pad": 4060 / 8192, "dynamic": 4060 / 7400, "grouped": 4060 / 4280})
    passes("03.3", {"pad": 0.50, "dynamic": 0.55, "grouped": 0.95})
    fails("03.3", {"pad": ..., "dynamic": ..., "grouped": ...}, "not answered yet")
    fails("03.3", {"pad": 0.50, "dynamic": 0.95, "grouped": 0.95}, "'dynamic': 0.95 is too high")


# ---------------------------------------------------------------- 04
BROKEN_TEMPLATE = ARTICLE_CHAT_TEMPLATE.replace(
    "{{ eos_token }}", "{% if message['role'] != 'assistant' %}{{ eos_token }}{% endif %}")


def test_04_1_template():
    passes("04.1", ARTICLE_CHAT_TEMPLATE)
    fails("04.1", BROKEN_TEMPLATE, "assistant turn 1 is not followed by EOS", "never learns to end its turn")
    fails("04.1", ARTICLE_CHAT_TEMPLATE.replace("{{ bos_token }}", ""),
          "at character 0 yours has '<|user|>\\nWho are you' where the template has '<|im_start|><|user|>")
    fails("04.1", ARTICLE_CHAT_TEMPLATE.replace("{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
                                                ""), "(with the generation prompt)")


def spans_right(text):
    spans, head, end = [], "<|im_start|>assistant\n", "<|im_end|>"
    start = text.find(head)
    while start >= 0:
        a = start + len(head)
        b = text.index(end, a) + len(end)
        spans.append((a, b))
        start = text.find(head, b)
    return spans


def test_04_2_spans():
    passes("04.2", spans_right)
    fails("04.2", lambda t: spans_right(t)[:1], "found 1 spans, but the chat has 2 assistant turns")
    fails("04.2", lambda t: [(a, b - len("<|im_end|>")) for a, b in spans_right(t)], "ends before '<|im_end|>'")
    fails("04.2", lambda t: [(a - len("<|im_start|>assistant\n"), b) for a, b in spans_right(t)],
          "includes the '<|im_start|>assistant' header")


def test_04_3_system_tokens():
    passes("04.3", 21)
    fails("04.3", 17, "17 is too few")
    fails("04.3", "21", "an int")


# ---------------------------------------------------------------- coverage
def _unwritten(*args):
    ...  # a function as shipped: its body is still `...`


SHIPPED = {"00.1": _unwritten, "00.2": _unwritten, "01.1": _unwritten, "01.2": _unwritten,
           "01.3": {0.5: ..., 1.0: ..., 2.0: ...}, "02.1": _unwritten, "02.2": ..., "03.1": _unwritten,
           "03.3": {"pad": ..., "dynamic": ..., "grouped": ...}, "04.2": _unwritten, "04.3": ...}


@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_shipped_placeholders_say_not_answered_yet(key):
    fails(key, SHIPPED[key], "not answered yet")
    assert "raised" not in verdict(key, SHIPPED[key])


def test_every_exercise_gets_a_hint_and_a_solution_path(capsys):
    for key in KEYS:
        exercise(key).hint()
        exercise(key).solution()
    out = capsys.readouterr().out
    assert all(f"hint for {k}:" in out and f"notebooks/solutions/{k[:2]}_solutions.ipynb" in out for k in KEYS)

def test_every_notebook_has_exercises():
    assert {k[:2] for k in KEYS} == {"00", "01", "02", "03", "04"}
    assert all(2 <= sum(k.startswith(nb) for k in KEYS) <= 4 for nb in ("00", "01", "02", "03", "04"))


@pytest.mark.parametrize("key", KEYS)
def test_solutions_notebook_shows_the_exercise_passing(key):
    path = SOLUTIONS / f"{key[:2]}_solutions.ipynb"
    assert path.exists(), f"{path} is missing"
    nb = json.loads(path.read_text(encoding="utf-8"))  # its checked cells are clean: tests/notebooks/test_notebooks.py
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code"
               and "nbval-check-output" in c["metadata"].get("tags", []) for o in c["outputs"]]
    text = "".join("".join(o.get("text") or o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert f"✓ {key} correct" in text
