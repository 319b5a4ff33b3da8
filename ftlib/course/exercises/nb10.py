"""Checks for the exercises of notebook 10 (a bug only the metrics catch: pad = eos); see ``ftlib.course.exercises``.

Each check runs the learner's answer on small fixed tensors or a tiny random model (``ftlib.tiny``) and compares
it with a peer: the masking by position of ftlib's samples, ``ftlib.evaluate.response_loss``, and, for the end-token
label, what a tiny model trained on the learner's labels does. A known mistake gets its own sentence (what is wrong,
and why it matters); anything else gets the numbers.
"""
from __future__ import annotations

import torch

from ftlib.course.exercises.core import NOT_YET, call, register
from ftlib.course.exercises.shared import END, close, number, tiny_batch


# ---------------------------------------------------------------- 10 · pad = eos
@register("10.1", "fix the padding mask when pad == eos",
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


@register("10.2", "split the held-out loss into content and end token",
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


@register("10.3", "fix the end-token label and count the stops",
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
