"""Checks for the exercises of notebooks 07-09 (LoRA, DPO, evaluation); see ``ftlib.course.exercises``.

Each check runs the learner's answer on small fixed inputs (tensors, word lists, replies) or a tiny random model
(``ftlib.tiny``) and compares it with a peer: peft's LoRA layer, ftlib's tested DPO and evaluation code
(``ftlib.evaluate.repeats_ngram``, ``ftlib.short_answers.is_right``). A known mistake gets its own sentence
(what is wrong, and why it matters); anything else gets the numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ftlib.course.exercises.core import NOT_YET, call, register
from ftlib.course.exercises.shared import close, known_mistake, number, tiny_batch

# ---------------------------------------------------------------- 07 · LoRA
R07, TARGETS07 = 8, ("q_proj", "v_proj")


@register("07.1", "predict LoRA's trainable parameter count",
          hint="a wrapped layer with weight (d_out, d_in) gets A (r, d_in) and B (d_out, r): r * (d_in + d_out) "
               "numbers; add them up over every wrapped layer of every decoder layer (v_proj is smaller here)",
          success="that is exactly what peft trains for rank 8 on q_proj and v_proj.")
def _lora_count(answer) -> str | None:
    from ftlib.lora import add_lora, count_parameters
    from ftlib.tiny import tiny_llama

    value = number(answer)
    if value is None:
        return f"answer with one whole number, not {answer!r}"
    with torch.random.fork_rng():  # building and wrapping draw random weights: leave the learner's state alone
        model = tiny_llama(vocab_size=64)
        shapes = [m.weight.shape for name, m in model.named_modules() if name.endswith(TARGETS07)]
        expected = count_parameters(add_lora(model, r=R07, alpha=2 * R07, target_modules=TARGETS07))["trainable"]
    if value == expected:
        return None
    return known_mistake(value, {
        "you counted one decoder layer; every layer gets its own adapters": expected / len(model.model.layers),
        "you counted only A (r x d_in); B (d_out x r) is trained too": sum(R07 * s[1] for s in shapes),
        "you counted the full weight matrices W; LoRA leaves them frozen and trains r * (d_in + d_out) per layer":
            sum(s.numel() for s in shapes),
        "you counted r * d_in * d_out; A and B are two thin matrices, r * (d_in + d_out) numbers":
            sum(R07 * s.numel() for s in shapes),
        "v_proj is not square here (grouped-query attention: 2 value heads for 4 query heads); use its shape":
            len(shapes) * R07 * 2 * shapes[0][0],
    }) or f"{int(value):,} is too {'high' if value > expected else 'low'}: add r * (d_in + d_out) over the layers"


@register("07.2", "fix the LoRA forward pass",
          hint="compare with the formula at the top of the notebook: W x + (alpha / r) B A x",
          success="your layer computes what peft's LoRA layer computes.")
def _lora_forward(fn) -> str | None:
    from peft import LoraConfig, get_peft_model

    r, alpha = 4, 16
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # the layers draw random weights: leave the learner's random state alone
        net = torch.nn.Sequential()
        net.add_module("lin", torch.nn.Linear(8, 6, bias=False))
        wrapped = get_peft_model(net, LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"]))
    layer = wrapped.base_model.model.lin
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.randn(6, 8, generator=g))
        A.copy_(torch.randn(A.shape, generator=g))  # fixed, so every machine gets the same verdict
        B.copy_(torch.randn(B.shape, generator=g))  # a trained adapter: B is no longer zero
        x = torch.randn(3, 8, generator=g)
        expected = wrapped(x)
        W = layer.base_layer.weight
        got = call(fn, x.clone(), W.clone(), A.clone(), B.clone(), alpha, r, unanswered=NOT_YET)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return f"return a tensor of shape {tuple(expected.shape)} (one output row per input row), not {got!r}"
    if torch.allclose(got, expected, atol=1e-5):
        return None
    base, update = x @ W.T, x @ A.T @ B.T
    for factor, sentence in [(1, f"the adapter's update B A x comes out {alpha // r} times smaller than peft's"),
                             (r / alpha, "the update is scaled by r / alpha; it is alpha / r"),
                             (alpha, "the update is scaled by alpha; it is alpha / r"), (0, "the adapter is missing")]:
        if torch.allclose(got, base + factor * update, atol=1e-5):
            return sentence
    return f"your output differs from peft's LoRA layer by up to {(got - expected).abs().max():.3g}"


# ---------------------------------------------------------------- 08 · DPO
@register("08.1", "the DPO loss from four log-probabilities",
          hint="rewards are beta * (policy - reference) log-probs; the loss is -logsigmoid(chosen reward - rejected "
               "reward), averaged over the pairs",
          success="your loss equals ftlib.dpo.dpo_loss (tested equal to TRL's DPOTrainer).")
def _dpo(fn) -> str | None:
    from ftlib.dpo import dpo_loss

    pc, pr = torch.tensor([-12.0, -30.5, -7.25, -20.0]), torch.tensor([-14.0, -28.0, -9.0, -20.5])
    rc, rr = torch.tensor([-13.0, -29.0, -8.0, -19.0]), torch.tensor([-13.5, -29.0, -8.5, -21.0])
    beta = 0.5
    got = call(fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta, unanswered=NOT_YET)
    value = number(got)
    if value is None:
        return "return one number, the loss averaged over the pairs, not one per pair"
    expected = float(dpo_loss(pc, pr, rc, rr, beta).loss)  # the peer
    if close(value, expected):
        return None
    margin = beta * ((pc - rc) - (pr - rr))
    mistake = known_mistake(value, {
        "your loss falls as the rejected reply gains on the chosen one: the margin is chosen reward minus rejected "
        "reward": float(-F.logsigmoid(-margin).mean()),
        "you left out the reference: the reward is beta * (policy log-prob - reference log-prob)":
            float(-F.logsigmoid(beta * (pc - pr)).mean()),
        "you left out beta: it scales the rewards (and limits how far the policy moves)":
            float(-F.logsigmoid(margin / beta).mean()),
        "you summed over the pairs; the loss is their mean": float(-F.logsigmoid(margin).sum()),
    })
    if mistake:
        return mistake
    start = number(fn(pc, pr, pc.clone(), pr.clone(), beta))
    if start is None or not close(start, math.log(2)):
        return "when the policy equals the reference every reward is 0, so the loss must be log 2 = 0.693; yours is not"
    return f"your loss is {value:.4f}; ftlib.dpo.dpo_loss gives {expected:.4f}"


@register("08.2", "a reply's log-probability from logits and labels",
          hint="log_softmax the logits; position t scores labels[t + 1]; gather those log-probs where the label is "
               "not -100 (torch.gather needs the -100s replaced by any valid id first) and sum them per row",
          success="your log-probabilities equal ftlib.loss.sequence_logps on the same model and batch.")
def _seq_logps(fn) -> str | None:
    from ftlib.loss import sequence_logps

    model, ids, labels, logits = tiny_batch()
    got = call(fn, logits.clone(), labels.clone(), unanswered=NOT_YET)
    if not isinstance(got, torch.Tensor) or got.shape != (2,):
        return f"return one log-probability per row (a tensor of shape (2,)), not {getattr(got, 'shape', got)!r}"
    with torch.no_grad():
        expected = sequence_logps(model, {"input_ids": ids}, labels)  # the peer
    if torch.allclose(got, expected, atol=1e-4):
        return None
    if torch.allclose(got, -expected, atol=1e-4):
        return "your values are positive: a log-probability is at most 0 (you returned the loss)"
    n = (labels[:, 1:] != -100).sum(1)
    if torch.allclose(got, expected / n, atol=1e-4):
        return "you averaged over the tokens; log p(reply | prompt) is their sum (a longer reply is less likely)"
    logp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    if torch.allclose(got, (logp * (labels != -100)).sum(1), atol=1e-4):
        return "you scored each position against its own token: position t predicts label t + 1"
    return f"yours are {[round(v, 3) for v in got.tolist()]}, ftlib.loss.sequence_logps gives " \
           f"{[round(v, 3) for v in expected.tolist()]}"


# ---------------------------------------------------------------- 09 · evaluation
LOOP = "1 . 1 . 1 . 1 . 1 . 1 ."  # a reply stuck in a loop, as repeats_ngram reads it (punctuation marks are words)
# (words, n, times): a loop, a sentence, a list of different items, a 3-gram 3 and 4 times, overlapping occurrences,
# other n and times, and a reply shorter than n (last: it is where a bare max() over no n-grams raises)
REPEAT_CASES = [(LOOP, 3, 4), ("the model answers the question and then it stops .", 3, 4),
                ("apples , pears , plums , figs , dates .", 3, 4), ("i think so . " * 3, 3, 4),
                ("i think so . " * 4, 3, 4), ("ha ha ha ha ha ha", 3, 4), ("to be or not to be or not to be", 2, 3),
                (LOOP, 3, 6), ("ok", 3, 4)]


def _most_non_overlapping(words: list, n: int) -> int:
    """The largest count of an n-gram when each occurrence starts after the previous one ended (str.count's way)."""
    best = 0
    for gram in {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}:
        count, i = 0, 0
        while i <= len(words) - n:
            if tuple(words[i:i + n]) == gram:
                count, i = count + 1, i + n
            else:
                i += 1
        best = max(best, count)
    return best


def _most_grams(words: list, n: int, last: int = 1) -> int:
    """The largest count of an n-gram, overlapping occurrences included (``last=0``: the last n-gram left out)."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + last)]
    return max((grams.count(g) for g in grams), default=0)


@register("09.1", "spot a reply stuck in a loop",
          hint="count every tuple(words[i:i + n]) for i in range(len(words) - n + 1) (collections.Counter), then "
               "compare the largest count with times",
          success="your function agrees with ftlib.evaluate.repeats_ngram on every reply.")
def _repeats(fn) -> str | None:
    from ftlib.evaluate import repeats_ngram

    cases = [(text.split(), n, times) for text, n, times in REPEAT_CASES]
    got = [fn(list(words), n, times) for words, n, times in cases[:-1]]
    if all(g is None for g in got):
        return NOT_YET
    words, n, times = cases[-1]
    try:
        got.append(fn(list(words), n, times))
    except Exception as e:  # any error on a short reply is the same mistake
        return f"a reply shorter than n words has no n-gram, so it repeats none: return False (yours raised " \
               f"{type(e).__name__})"
    bad = next((g for g in got if not isinstance(g, bool)), None)
    if bad is not None or None in got:
        return f"return True or False for every reply, not {bad!r}"
    expected = [repeats_ngram(words, n, times) for words, n, times in cases]  # the peer
    if got == expected:
        return None
    mistakes = {
        "you count occurrences that do not overlap; they overlap in a loop ('ha ha ha ha ha ha' has 'ha ha ha' 4 "
        "times), so slide one word at a time": [_most_non_overlapping(w, n) >= t for w, n, t in cases],
        "a 3-gram that occurs exactly 4 times is a loop: compare with >= times, not > times":
            [_most_grams(w, n) > t for w, n, t in cases],
        "you count single words; a list like 'apples , pears , plums , figs' repeats its comma, not a run of n "
        "words": [_most_grams(w, 1) >= t for w, n, t in cases],
        "you miss the last n-gram: a list of L words has L - n + 1 of them, range(len(words) - n + 1)":
            [_most_grams(w, n, last=0) >= t for w, n, t in cases],
        "use the n and times you are given, not 3 and 4": [_most_grams(w, 3) >= 4 for w, n, t in cases],
        "use the n you are given, not 3": [_most_grams(w, 3) >= t for w, n, t in cases],
    }
    mistake = next((sentence for sentence, wrong in mistakes.items() if got == wrong), None)
    if mistake:
        return mistake
    (words, n, times), want, yours = next((c, e, g) for c, e, g in zip(cases, expected, got) if e != g)
    return f"for the words of {' '.join(words)!r} with n={n}, times={times} expected {want}, got {yours}"


# (reply, accepted answers): the first non-blank line, normalised, must contain an answer as whole words
ANSWER_CASES = [("Paris.", ["Paris"]), ("The answer is 12.", ["12"]), ("112", ["12"]), ("1 2", ["12"]),
                ("I am not sure.\nParis", ["Paris"]), ("\n\nParis", ["Paris"]), ("THE Rome", ["Rome"]),
                ("rome, of course", ["Rome"]), ("café", ["cafe"]), ("Nile.", ["The Nile"]),
                ("Lyon, Paris or Marseille?", ["Paris"])]


@register("09.2", "score a short answer by the course's rule",
          hint="take the first non-blank line; normalise it and each answer (ftlib.short_answers.normalise); whole "
               "words: f' {answer} ' in f' {line} '",
          success="your rule agrees with ftlib.short_answers.is_right on every reply.")
def _is_right(fn) -> str | None:
    from ftlib.short_answers import is_right

    got = [fn(reply, list(answers)) for reply, answers in ANSWER_CASES]
    if all(g is None for g in got):
        return NOT_YET
    bad = next((g for g in got if not isinstance(g, bool)), None)
    if bad is not None or None in got:
        return f"return True or False for every reply, not {bad!r}"
    expected = [is_right(reply, answers) for reply, answers in ANSWER_CASES]  # the peer
    if got == expected:
        return None
    said = dict(zip((reply for reply, _ in ANSWER_CASES), got))
    if said["112"]:
        return "you count '112' as right for 12: the answer must occur as whole words, not inside another word"
    if said["1 2"]:
        return "you count '1 2' as right for 12: spaces separate words, so keep them (runs of spaces become one)"
    if said["I am not sure.\nParis"]:
        return "you read every line; only the first non-blank line counts (a later line is often the model " \
               "rambling on)"
    if not said["\n\nParis"]:
        return "you read the first line even when it is blank; the rule reads the first non-blank line"
    if said["Paris."] and not said["The answer is 12."]:
        return "the answer may be part of the line: 'The answer is 12.' is right for 12 (look for it as whole " \
               "words, not equality)"
    if not (said["Paris."] and said["THE Rome"] and said["rome, of course"]):
        return "normalise both sides first (lower case, punctuation to spaces): 'Paris.' is right for Paris and " \
               "'rome, of course' for Rome"
    if said["café"]:
        return "accents are kept: 'café' is not 'cafe' (only case and punctuation are normalised)"
    if not said["Nile."]:
        return "drop a leading a/an/the from the accepted answers too: 'Nile.' is right for 'The Nile'"
    if not said["Lyon, Paris or Marseille?"]:
        return "a reply that lists several guesses is right if one of them is: the rule reads no meaning"
    reply, answers = next(c for c, e, g in zip(ANSWER_CASES, expected, got) if e != g)
    return f"for the reply {reply!r} and answers {answers} expected {is_right(reply, answers)}, " \
           f"got {said[reply]}"
