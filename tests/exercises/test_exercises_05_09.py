"""Exercises of notebooks 05-10: each worked solution passes its check, each planted mistake gets its sentence.

The solutions here are those of notebooks/solutions/NN_solutions.ipynb (whose saved outputs are checked at the end).
"""
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ftlib.course.exercises import all_exercises, exercise
from ftlib.short_answers import first_line, normalise
from ftlib.tiny import tiny_llama

SOLUTIONS = Path(__file__).resolve().parents[2] / "notebooks" / "solutions"
KEYS = [k for k in all_exercises() if k[:2] in {"05", "06", "07", "08", "09", "10"}]


# ---------------------------------------------------------------- worked solutions
def shifted_loss(logits, labels):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def micro_batch_losses(sums, counts):
    return [s / sum(counts) for s in sums]


def article_prompt(messages, bos, eos):
    turns = "".join(f"<|{m['role']}|>\n{m['content']}\n{eos}" for m in messages)
    return bos + turns + "<|assistant|>\n"


def cut_reply(token_ids, stop_ids):
    for i, token in enumerate(token_ids):
        if token in stop_ids:
            return token_ids[:i], "eos"
    return token_ids, "length"


def lora_forward(x, W, A, B, alpha, r):
    return x @ W.T + (alpha / r) * (x @ A.T @ B.T)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    margin = beta * (policy_chosen - ref_chosen) - beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(margin).mean()


def sequence_logps(logits, labels):
    labels = labels[:, 1:]
    logp = logits[:, :-1].log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (logp * (labels != -100)).sum(-1)


def repeats(words, n=3, times=4):
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(count >= times for count in grams.values())


def is_right(reply, answers):
    line = next((line for line in reply.splitlines() if line.strip()), "")
    return any(f" {normalise(a)} " in f" {normalise(line)} " for a in answers if normalise(a))


def labels_for(input_ids, attention_mask, pad_id):
    return input_ids.masked_fill(attention_mask == 0, -100)


def split_loss(losses, targets, end_ids):
    is_end = torch.isin(targets, torch.tensor(sorted(end_ids)))
    return losses[~is_end].mean(), losses[is_end].mean()


def sample_labels(input_ids, prompt_length, pad_id):
    return [-100] * prompt_length + list(input_ids[prompt_length:])


SOLVED = {"05.1": shifted_loss, "05.2": micro_batch_losses, "06.1": article_prompt, "06.2": cut_reply,
          "07.1": 1792, "07.2": lora_forward, "08.1": dpo_loss, "08.2": sequence_logps, "09.1": repeats,
          "09.2": is_right, "10.1": labels_for, "10.2": split_loss, "10.3": sample_labels}


def test_every_exercise_has_a_solution_here():
    assert sorted(SOLVED) == KEYS


@pytest.mark.parametrize("key", sorted(SOLVED))
def test_worked_solution_passes(key):
    verdict = exercise(key).check(SOLVED[key])
    assert verdict, repr(verdict)
    assert repr(verdict).startswith(f"✓ {key} correct: ")


def test_the_lora_count_is_peft_s():
    from ftlib.lora import add_lora, count_parameters

    model = add_lora(tiny_llama(vocab_size=64), r=8, alpha=16, target_modules=("q_proj", "v_proj"))
    assert count_parameters(model)["trainable"] == SOLVED["07.1"]


# ---------------------------------------------------------------- planted mistakes
def _no_shift(logits, labels):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _mean_over_all(logits, labels):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="none").mean()


def _flipped(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * (pr - rr) - beta * (pc - rc)).mean()


def _mean_logps(logits, labels):
    return sequence_logps(logits, labels) / (labels[:, 1:] != -100).sum(-1)


def _grams(words, n):
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _non_overlapping(words, n, times):
    text = " ".join(words)  # str.count counts occurrences that do not overlap
    return any(text.count(" ".join(gram)) >= times for gram in _grams(words, n))


def _ascii(text):
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _words(text):  # normalise without dropping a leading article
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


WRONG = [
    ("05.1", _no_shift, "position t must predict label t + 1"),
    ("05.1", _mean_over_all, "the -100 ones included"),
    ("05.1", lambda lg, lb: shifted_loss(lg, lb) * 2, "Hugging Face's model(input_ids, labels=labels).loss is"),
    ("05.2", lambda s, n: [a / b / len(s) for a, b in zip(s, n)], "counts 10 times as much"),
    ("05.2", lambda s, n: [a / b for a, b in zip(s, n)], "3 times too large"),
    ("06.1", lambda m, b, e: article_prompt(m, b, e)[:-len("<|assistant|>\n")], "open assistant turn"),
    ("06.1", lambda m, b, e: article_prompt(m[-1:], b, e), "re-sends the whole conversation"),
    ("06.1", lambda m, b, e: article_prompt(m, b, ""), "not closed by the end token '</s>'"),
    ("06.2", lambda ids, s: (ids[:max(i for i, t in enumerate(ids) if t in s)], "eos") if set(ids) & s
     else (ids, "length"), "the reply ends at the first one"),
    ("06.2", lambda ids, s: (cut_reply(ids, s)[0], "eos"), "the finish reason is 'length', not 'eos'"),
    ("07.1", 896, "you counted one decoder layer"),
    ("07.1", 2048, "v_proj is not square"),
    ("07.1", 1000, "1,000 is too low"),
    ("07.2", lambda x, W, A, B, alpha, r: x @ W.T + x @ A.T @ B.T, "4 times smaller than peft's"),
    ("08.1", _flipped, "the margin is chosen reward minus rejected reward"),
    ("08.1", lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * (pc - pr)).mean(), "you left out the reference"),
    ("08.1", lambda *a: torch.tensor(1.0), "the loss must be log 2"),
    ("08.2", _mean_logps, "is their sum"),
    ("08.2", lambda lg, lb: -sequence_logps(lg, lb), "a log-probability is at most 0"),
    ("09.1", _non_overlapping, "you count occurrences that do not overlap"),
    ("09.1", lambda w, n, t: repeats(w, n, t + 1), "compare with >= times, not > times"),
    ("09.1", lambda w, n, t: any(c >= t for c in Counter(w).values()), "you count single words"),
    ("09.1", lambda w, n, t: any(c >= t for c in Counter(_grams(w, n)[:-1]).values()), "you miss the last n-gram"),
    ("09.1", lambda w, n, t: repeats(w), "use the n and times you are given, not 3 and 4"),
    ("09.1", lambda w, n, t: repeats(w, 3, t), "use the n you are given, not 3"),
    ("09.1", lambda w, n, t: max(Counter(_grams(w, n)).values()) >= t, "a reply shorter than n words"),
    ("09.1", lambda w, n, t: max(Counter(_grams(w, n)).values(), default=0), "return True or False"),
    ("09.1", lambda w, n, t: False, "for the words of '1 . 1 . 1 . 1 . 1 . 1 .' with n=3, times=4 expected True"),
    ("09.2", lambda r, a: any(normalise(x) in normalise(r.splitlines()[0]) for x in a), "'112' as right for 12"),
    ("09.2", lambda r, a: any(re.sub(r"\W", "", x) == re.sub(r"\W", "", r) for x in a), "'1 2' as right for 12"),
    ("09.2", lambda r, a: any(f" {normalise(x)} " in f" {normalise(r)} " for x in a), "you read every line"),
    ("09.2", lambda r, a: is_right(r.splitlines()[0], a), "even when it is blank"),
    ("09.2", lambda r, a: any(normalise(x) == normalise(r) for x in a), "not equality"),
    ("09.2", lambda r, a: any(x in first_line(r).split() for x in a), "normalise both sides first"),
    ("09.2", lambda r, a: any(x.lower() in first_line(r).lower().split() for x in a), "normalise both sides"),
    ("09.2", lambda r, a: is_right(_ascii(r), [_ascii(x) for x in a]), "accents are kept"),
    ("09.2", lambda r, a: any(f" {_words(x)} " in f" {_words(first_line(r))} " for x in a), "the accepted answers"),
    ("09.2", lambda r, a: is_right(r.split(",")[0], a), "lists several guesses"),
    ("09.2", lambda r, a: "yes" if is_right(r, a) else "no", "return True or False for every reply, not 'yes'"),
    ("10.1", lambda ids, mask, pad: ids.masked_fill(ids == pad, -100), "the article's bug"),
    ("10.2", lambda losses, t, e: split_loss(losses, t, e)[::-1], "the wrong way round"),
    ("10.3", lambda ids, n, pad: [-100 if i < n or t == pad else t for i, t in enumerate(ids)],
     "stopped on 0 of 6 replies: the end token's label is -100"),
    ("10.3", lambda ids, n, pad: list(ids), "stopped on 6 of 6 replies, but you train the prompt too"),
    ("10.3", lambda ids, n, pad: [-100] * n + list(ids[n:-1]), "one label per token (9 per sample), not 8"),
    ("10.3", lambda ids, n, pad: [-100] * (n + 1) + list(ids[n + 1:]), "expected labels"),
    ("10.2", lambda losses, t, e: (split_loss(losses, t, e)[0], losses.mean()), "the overall mean"),
]


@pytest.mark.parametrize("key,answer,sentence", WRONG, ids=[f"{k}-{i}" for i, (k, *_) in enumerate(WRONG)])
def test_planted_mistake_fails_with_its_sentence(key, answer, sentence):
    verdict = exercise(key).check(answer)
    assert not verdict
    text = repr(verdict)
    assert text.startswith(f"✗ {key}: ") and sentence in text and "\n" not in text, text


@pytest.mark.parametrize("key", sorted(SOLVED))
def test_the_shipped_stub_says_not_answered_yet(key):
    def stub(*args):
        ...  # what the exercise cell ships with: a function whose body is `...`

    stub_answer = ... if key == "07.1" else stub
    assert "not answered yet" in repr(exercise(key).check(stub_answer))


def test_checks_leave_the_learners_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for key in SOLVED:
        exercise(key).check(SOLVED[key])
    assert torch.equal(torch.rand(3), expected)


def test_the_stop_check_measures_what_the_end_label_does():
    """10.3's check trains a tiny model: with the end token trained every reply stops, without it none does."""
    from ftlib.course.exercises.nb10 import _stop_samples, _stops_after_training

    ids = _stop_samples()
    labels = torch.tensor([sample_labels(row.tolist(), 4, 2) for row in ids])
    assert _stops_after_training(labels) == 6
    labels[:, -1] = -100
    assert _stops_after_training(labels) == 0


# ---------------------------------------------------------------- the solutions notebooks
@pytest.mark.parametrize("key", KEYS)
def test_solutions_notebook_shows_the_check_passing(key):
    path = SOLUTIONS / f"{key[:2]}_solutions.ipynb"
    assert path.exists(), f"{path} is missing"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    shown = [o.get("data", {}).get("text/plain", "") for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    assert any(f"✓ {key} correct" in "".join(text) for text in shown)


def test_the_accumulation_solution_gives_one_big_batch_gradient():
    """The peer of 05.2: gradients of the scaled micro-batch losses, added up, equal one big batch's."""
    from ftlib.train import token_loss_sum

    model = tiny_llama(vocab_size=64)
    ids = torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :7] = -100  # micro-batch 0 trains 1 token (its last), micro-batch 1 trains 7
    micro = [{"input_ids": ids[i:i + 1], "labels": labels[i:i + 1]} for i in range(2)]

    def grads(scale):
        model.zero_grad()
        sums, counts = zip(*(token_loss_sum(model, b) for b in micro))
        for loss in scale(list(sums), list(counts)):
            loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    model.zero_grad()
    shifted_loss(model(input_ids=ids).logits, labels).backward()
    big = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(grads(micro_batch_losses), big, atol=1e-6)
    assert not torch.allclose(grads(lambda s, n: [a / b / len(s) for a, b in zip(s, n)]), big, atol=1e-4)
