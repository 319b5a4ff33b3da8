"""Checks for the exercises of notebooks 07-09 (LoRA, DPO, evaluation); see ``ftlib.course.exercises``.

Each check runs the learner's answer on small fixed tensors or a tiny random model (``ftlib.tiny``) and compares
it with a peer: peft's LoRA layer, ftlib's tested DPO and evaluation code. A known mistake gets its own sentence
(what is wrong, and why it matters); anything else gets the numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ftlib.course.exercises.core import NOT_YET, call, register
from ftlib.course.exercises.shared import END, close, known_mistake, number, tiny_batch

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
@register("09.1", "fix the padding mask when pad == eos",
          hint="which positions are padding is written in the attention mask, not in the token ids",
          success="padding is masked by position and every reply keeps its end-token label.")
def _pad_mask(fn) -> str | None:
    ids = torch.tensor([[1, 5, 6, 7, END, END, END], [1, 8, END, 9, 4, 3, END]])  # pad == eos == 2
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    got = call(fn, ids.clone(), mask.clone(), END, unanswered=NOT_YET)
    if not isinstance(got, torch.Tensor) or got.shape != ids.shape:
        return f"return labels shaped like input_ids {tuple(ids.shape)}, not {getattr(got, 'shape', got)!r}"
    expected = ids.masked_fill(mask == 0, -100)
    if torch.equal(got, expected):
        return None
    if torch.equal(got, ids.masked_fill(ids == END, -100)):
        return "your labels drop every end token, the one that closes each reply included, so the model is never " \
               "taught to stop (the article's bug)"
    if torch.equal(got, ids):
        return "nothing is masked: the padding after row 0's end token would be trained on"
    return f"expected labels {expected.tolist()}, got {got.tolist()}"


@register("09.2", "split the held-out loss into content and end token",
          hint="is_end = torch.isin(targets, torch.tensor(sorted(end_ids))); then the mean of losses[~is_end] and "
               "the mean of losses[is_end]",
          success="your split equals ftlib.evaluate.response_loss's content_loss and end_loss.")
def _split_loss(fn) -> str | None:
    from ftlib.evaluate import response_loss
    from ftlib.loss import token_losses

    model, ids, labels, _ = tiny_batch()
    with torch.no_grad():
        losses, trained = token_losses(model, {"input_ids": ids}, labels)
    targets = labels[:, 1:][trained]
    got = call(fn, losses.clone(), targets.clone(), {END}, unanswered=NOT_YET)
    pair = [number(v) for v in got] if isinstance(got, (tuple, list)) else []
    if len(pair) != 2 or None in pair:
        return f"return a pair of numbers (content loss, end loss), not {got!r}"
    peer = response_loss(model, [{"input_ids": ids, "labels": labels}], end_token_ids={END})
    content, end = peer["content_loss"], peer["end_loss"]
    if close(pair[0], content) and close(pair[1], end):
        return None
    if close(pair[0], end) and close(pair[1], content):
        return "you returned them the wrong way round: (content loss, end loss)"
    if any(close(v, peer["loss"]) for v in pair):
        return "one of your numbers is the overall mean, which hides the end token (one per reply) in the content"
    if close(pair[1], end * 2):
        return "your end loss is the sum over the 2 end tokens; it is their mean"
    return f"yours are ({pair[0]:.4f}, {pair[1]:.4f}); response_loss gives ({content:.4f}, {end:.4f})"


N_STOP, PROMPT_LEN, REPLY_LEN, LIMIT, STEPS = 6, 4, 4, 8, 40  # 15 steps already stop all 6: a wide margin


def _stop_samples() -> torch.Tensor:
    """Six fixed samples: BOS and 3 prompt tokens, a 4-token reply, the end token (pad == eos, as in the article)."""
    ids = torch.randint(3, 64, (N_STOP, PROMPT_LEN + REPLY_LEN + 1), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = 1, END
    return ids


def _stops_after_training(labels: torch.Tensor) -> int:
    """Train a tiny random Llama on the samples with ``labels`` (``STEPS`` AdamW steps, about a second), then
    count the greedy replies to the six prompts that emit the end token within ``LIMIT`` new tokens."""
    from ftlib.tiny import tiny_llama

    ids = _stop_samples()
    with torch.random.fork_rng():  # tiny_llama seeds torch: leave the learner's random state alone
        model = tiny_llama(vocab_size=64).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(STEPS):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out = ids[:, :PROMPT_LEN]
    stopped = torch.zeros(N_STOP, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(LIMIT):
            nxt = model(input_ids=out).logits[:, -1].argmax(-1)
            stopped |= nxt == END
            out = torch.cat([out, nxt[:, None]], dim=1)
    return int(stopped.sum())


@register("09.3", "fix the end-token label and count the stops",
          hint="only the prompt is masked: keep every label from prompt_length on, the end token included, "
               "whatever its id",
          success="the tiny model trained on your labels stops on all 6 replies: the end token is a target, so "
                  "the model learned to emit it.")
def _stop_labels(fn) -> str | None:
    ids = _stop_samples()
    rows = [fn(row.tolist(), PROMPT_LEN, END) for row in ids]
    if all(r is None for r in rows):
        return NOT_YET
    try:
        labels = torch.tensor([list(r) for r in rows], dtype=torch.long)
    except (TypeError, ValueError):
        return "return one list of labels per sample (whole numbers, -100 for tokens not trained)"
    if labels.shape != ids.shape:
        return f"return one label per token ({ids.shape[1]} per sample), not {len(rows[0])}"
    stops = _stops_after_training(labels)
    expected = ids.clone()
    expected[:, :PROMPT_LEN] = -100
    said = f"trained on your labels, the tiny model stopped on {stops} of {N_STOP} replies"
    if torch.equal(labels, expected) and stops == N_STOP:
        return None
    if (labels[:, -1] == -100).all():
        return f"{said}: the end token's label is -100 (it equals the pad id), so the model is never taught to " \
               "stop — the article's bug"
    if torch.equal(labels, ids):
        return f"{said}, but you train the prompt too: only the reply and its end token are targets"
    return f"{said}; expected labels {expected[0].tolist()} for the first sample, got {labels[0].tolist()}"
