"""Checks for the exercises of notebooks 05-09 (SFT, chat, LoRA, DPO, evaluation); see ``ftlib.exercises``.

Each check runs the learner's answer on small fixed tensors or a tiny random model (``ftlib.testing``) and compares
it with a peer: Hugging Face's own loss, the chat template, peft's LoRA layer, ftlib's tested DPO and evaluation
code. A known mistake gets its own sentence (what is wrong, and why it matters); anything else gets the numbers.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ftlib.exercises import register

NOT_YET = "not answered yet: your function returns None (replace the `...` with your code; ex.hint() gives a hint)"
END = 2  # the tiny models' end token (pad == eos, as in the article)


def _number(x) -> float | None:
    """A plain float from a number or a one-element tensor; None for anything else."""
    if isinstance(x, torch.Tensor):
        return float(x.detach()) if x.numel() == 1 else None
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return None


def _close(a: float, b: float, tol: float = 1e-4) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


def _match(value: float, mistakes: dict[str, float]) -> str | None:
    """The sentence of the first known mistake that gives ``value``."""
    return next((sentence for sentence, wrong in mistakes.items() if _close(value, wrong)), None)


@functools.lru_cache(maxsize=1)
def _tiny() -> tuple:
    """A tiny random Llama, a 2-row batch (prompt masked, row 1 padded, each reply closed by the end token), logits."""
    from ftlib.testing import tiny_llama

    with torch.random.fork_rng():  # tiny_llama seeds torch: leave the learner's random state alone
        model = tiny_llama(vocab_size=64)
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    ids[0, 9], ids[1, 7:] = END, END  # row 1: its end token at 7, then padding (pad == eos)
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[1, 8:] = -100  # padding, masked by position
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return model, ids, labels, logits


# ---------------------------------------------------------------- 05 · SFT
@register("05.1", "the shifted cross-entropy over trained tokens",
          hint="token t predicts token t + 1: drop the last position's logits and the first label, flatten both, "
               "and F.cross_entropy skips label -100 and averages over the trained tokens for you",
          success="your loss equals Hugging Face's model(input_ids, labels=labels).loss on the same batch.")
def _shifted_loss(fn) -> str | None:
    model, ids, labels, logits = _tiny()
    got = fn(logits.clone(), labels.clone())
    if got is None:
        return NOT_YET
    value = _number(got)
    if value is None:
        return f"return one number (the mean loss), not {type(got).__name__} {tuple(getattr(got, 'shape', ()))}"
    with torch.no_grad():
        expected = float(model(input_ids=ids, labels=labels).loss)  # the peer: HF shifts and masks the same way
    if _close(value, expected):
        return None
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="none")
    unshifted = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    return _match(value, {
        "you scored each position against its own token: position t must predict label t + 1, so drop the last "
        "logit and the first label": float(unshifted),
        "you averaged over every position, the -100 ones included: divide by the number of trained tokens only":
            float(per_token.mean()),
        "you returned the sum over the trained tokens; the loss is their mean": float(per_token.sum()),
    }) or f"your loss is {value:.4f}; Hugging Face's model(input_ids, labels=labels).loss is {expected:.4f}"


@register("05.2", "token-weighted loss across gradient-accumulation micro-batches",
          hint="one big batch averages over all its trained tokens: divide each micro-batch's *sum* by the step's "
               "total token count, so the gradients added up by backward() are those of the big batch",
          success="the micro-batch losses add up to the mean over all the step's trained tokens, as one big batch.")
def _accumulation(fn) -> str | None:
    sums, counts = [30.0, 2.0, 12.0], [10, 1, 4]  # per-token losses 3.0, 2.0 and 3.0; 15 trained tokens
    got = fn(list(sums), list(counts))
    if got is None:
        return NOT_YET
    values = [_number(v) for v in got] if isinstance(got, (list, tuple)) else []
    if len(values) != len(sums) or None in values:
        return f"return one loss per micro-batch ({len(sums)} numbers), not {got!r}"
    expected = [s / sum(counts) for s in sums]
    if all(_close(v, e) for v, e in zip(values, expected)):
        return None
    if all(_close(v, s / n / len(sums)) for v, s, n in zip(values, sums, counts)):
        return ("you weighted every micro-batch equally (the mean of their means), so a token of its 1-token "
                "micro-batch counts 10 times as much as a token of the 10-token one")
    if all(_close(v, s / n) for v, s, n in zip(values, sums, counts)):
        return "each micro-batch's full mean is back-propagated, so the step's gradient is 3 times too large"
    return f"your losses add up to {sum(values):.4f}; one big batch of all 15 tokens has mean loss {sum(expected):.4f}"


# ---------------------------------------------------------------- 06 · chat
def _article_prompt(messages: list[dict], bos: str, eos: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    from ftlib.templates import ARTICLE_CHAT_TEMPLATE

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=ARTICLE_CHAT_TEMPLATE,
                                        add_generation_prompt=True, bos_token=bos, eos_token=eos)
    return rendered[0]


@register("06.1", "the next prompt of a chat, in the article's format",
          hint="BOS once, then for every message '<|role|>\\n' + content + '\\n' followed by EOS, and at the end the "
               "open assistant turn '<|assistant|>\\n' (the generation prompt)",
          success="your prompt is exactly what apply_chat_template renders with the article's template.")
def _chat_prompt(fn) -> str | None:
    bos, eos = "<s>", "</s>"
    chat = [{"role": "user", "content": "Hi! Who are you?"}, {"role": "assistant", "content": "I am Ada."},
            {"role": "user", "content": "What is the capital of Japan?"}, {"role": "assistant", "content": "Tokyo."},
            {"role": "user", "content": "And of France?"}]
    for messages in (chat[:1], chat):
        got = fn([dict(m) for m in messages], bos, eos)
        if got is None:
            return NOT_YET
        expected = _article_prompt(messages, bos, eos)
        if got == expected:
            continue
        if not isinstance(got, str):
            return f"return the prompt as one string, not {type(got).__name__}"
        if got + "<|assistant|>\n" == expected:
            return "your prompt lacks the open assistant turn '<|assistant|>\\n' at the end, so nothing tells the " \
                   "model that it is its turn to answer"
        if len(messages) > 1 and got == _article_prompt(messages[-1:], bos, eos):
            return "your prompt holds only the newest message: the model remembers nothing between calls, so " \
                   "every prompt re-sends the whole conversation"
        if got == expected.replace(eos, ""):
            return f"your turns are not closed by the end token {eos!r}: the model was trained to see it (and to " \
                   "write it) after every turn"
        if got == expected.replace(bos, "", 1):
            return f"your prompt does not start with the BOS token {bos!r}"
        at = next(i for i in range(len(expected) + 1) if got[i:i + 1] != expected[i:i + 1])
        return f"after {len(messages)} messages your prompt differs from the template's at character {at}: " \
               f"yours has {got[at:at + 20]!r}, the template's {expected[at:at + 20]!r}"
    return None


@register("06.2", "where a generated reply ends",
          hint="walk the generated ids: the first one in stop_ids ends the reply (it is not part of it); "
               "no stop token at all means the reply was cut at the length limit",
          success="your replies end where ftlib.evaluate.reply_length says, with the right finish reason.")
def _reply_end(fn) -> str | None:
    from ftlib.evaluate import reply_length

    cases = [([5, 9, 2, 2, 2], {2}), ([5, 9, 7], {2}), ([2, 2], {2}), ([4, 3, 2, 8, 2], {2, 3}), ([6, 2, 8, 2], {2})]
    for ids, stops in cases:
        got = fn(list(ids), set(stops))
        if got is None:
            return NOT_YET
        n, stopped = reply_length(ids, stops)  # the peer
        expected = (ids[:n], "eos" if stopped else "length")
        if not (isinstance(got, tuple) and len(got) == 2):
            return f"return a pair (reply ids, finish reason), not {got!r}"
        reply, reason = list(got[0]), got[1]
        if (reply, reason) == expected:
            continue
        if stopped and reply == ids[:n + 1]:
            return "your reply keeps the stop token: it ends the reply but is not part of it"
        if stopped and reply[:n] == ids[:n] and len(reply) > n:
            return f"for {ids} with stops {stops} you cut at a later stop token; the reply ends at the first one " \
                   "(finished rows are padded with the pad id, which is often the end token itself)"
        if reply == expected[0]:
            return f"for {ids} with stops {stops} the finish reason is {expected[1]!r}, not {reason!r}"
        return f"for {ids} with stops {stops} the reply is {expected[0]}, not {reply}"
    return None


# ---------------------------------------------------------------- 07 · LoRA
R07, TARGETS07 = 8, ("q_proj", "v_proj")


@register("07.1", "predict LoRA's trainable parameter count",
          hint="a wrapped layer with weight (d_out, d_in) gets A (r, d_in) and B (d_out, r): r * (d_in + d_out) "
               "numbers; add them up over every wrapped layer of every decoder layer (v_proj is smaller here)",
          success="that is exactly what peft trains for rank 8 on q_proj and v_proj.")
def _lora_count(answer) -> str | None:
    from ftlib.lora import add_lora, count_parameters
    from ftlib.testing import tiny_llama

    value = _number(answer)
    if value is None:
        return f"answer with one whole number, not {answer!r}"
    with torch.random.fork_rng():  # building and wrapping draw random weights: leave the learner's state alone
        model = tiny_llama(vocab_size=64)
        shapes = [m.weight.shape for name, m in model.named_modules() if name.endswith(TARGETS07)]
        expected = count_parameters(add_lora(model, r=R07, alpha=2 * R07, target_modules=TARGETS07))["trainable"]
    if value == expected:
        return None
    return _match(value, {
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
        got = fn(x.clone(), W.clone(), A.clone(), B.clone(), alpha, r)
    if got is None:
        return NOT_YET
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
    got = fn(pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
    if got is None:
        return NOT_YET
    value = _number(got)
    if value is None:
        return "return one number, the loss averaged over the pairs, not one per pair"
    expected = float(dpo_loss(pc, pr, rc, rr, beta).loss)  # the peer
    if _close(value, expected):
        return None
    margin = beta * ((pc - rc) - (pr - rr))
    mistake = _match(value, {
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
    start = _number(fn(pc, pr, pc.clone(), pr.clone(), beta))
    if start is None or not _close(start, math.log(2)):
        return "when the policy equals the reference every reward is 0, so the loss must be log 2 = 0.693; yours is not"
    return f"your loss is {value:.4f}; ftlib.dpo.dpo_loss gives {expected:.4f}"


@register("08.2", "a reply's log-probability from logits and labels",
          hint="log_softmax the logits; position t scores labels[t + 1]; gather those log-probs where the label is "
               "not -100 (torch.gather needs the -100s replaced by any valid id first) and sum them per row",
          success="your log-probabilities equal ftlib.loss.sequence_logps on the same model and batch.")
def _seq_logps(fn) -> str | None:
    from ftlib.loss import sequence_logps

    model, ids, labels, logits = _tiny()
    got = fn(logits.clone(), labels.clone())
    if got is None:
        return NOT_YET
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
    got = fn(ids.clone(), mask.clone(), END)
    if got is None:
        return NOT_YET
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

    model, ids, labels, _ = _tiny()
    with torch.no_grad():
        losses, trained = token_losses(model, {"input_ids": ids}, labels)
    targets = labels[:, 1:][trained]
    got = fn(losses.clone(), targets.clone(), {END})
    if got is None:
        return NOT_YET
    pair = [_number(v) for v in got] if isinstance(got, (tuple, list)) else []
    if len(pair) != 2 or None in pair:
        return f"return a pair of numbers (content loss, end loss), not {got!r}"
    peer = response_loss(model, [{"input_ids": ids, "labels": labels}], end_token_ids={END})
    content, end = peer["content_loss"], peer["end_loss"]
    if _close(pair[0], content) and _close(pair[1], end):
        return None
    if _close(pair[0], end) and _close(pair[1], content):
        return "you returned them the wrong way round: (content loss, end loss)"
    if any(_close(v, peer["loss"]) for v in pair):
        return "one of your numbers is the overall mean, which hides the end token (one per reply) in the content"
    if _close(pair[1], end * 2):
        return "your end loss is the sum over the 2 end tokens; it is their mean"
    return f"yours are ({pair[0]:.4f}, {pair[1]:.4f}); response_loss gives ({content:.4f}, {end:.4f})"
