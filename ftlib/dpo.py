"""Direct Preference Optimisation (DPO): learn from pairs of replies, one preferred ("chosen") over the other.

For a prompt x with replies y_w (chosen) and y_l (rejected), DPO scores each reply by how much more likely the
policy being trained makes it than a frozen reference model (the starting point) does::

    reward(y) = beta * (log p_policy(y | x) - log p_reference(y | x))
    loss      = -log sigmoid(reward(y_w) - reward(y_l))

``log p(y | x)`` is the *sum* of the log-probabilities of the reply's tokens (the prompt is context only).
``beta`` says how far the policy may drift from the reference: small beta, large steps away. The loss falls as
the margin ``reward(y_w) - reward(y_l)`` grows; the reward *accuracy* is the share of pairs with a positive margin.
No reward model and no sampling: it is supervised learning on pairs (Rafailov et al., 2023). The formula and
the batch layout (chosen rows first, then rejected rows, a ``completion_mask`` marking reply tokens) are TRL's
``DPOTrainer`` with ``loss_type="sigmoid"``, and tests/test_dpo.py checks that both give the same loss.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import datasets
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm.std import tqdm  # a text bar even in Jupyter (why: ftlib/train.py)
from transformers import PreTrainedTokenizerBase

from ftlib.loss import sequence_logps as summed_logps
from ftlib.samples import IGNORE_INDEX, SampleError, assistant_char_spans, validate_messages
from ftlib.train import lr_lambda

PAIR_KEYS = ("prompt_ids", "chosen_ids", "rejected_ids")


# ---------------------------------------------------------------- data: records to token pairs
def tokenise_pair(record: dict, tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None,
                  end_token: str | None = None, max_length: int | None = None, max_prompt_length: int | None = None,
                  overlong: Literal["truncate", "drop"] = "truncate", index: int | None = None) -> dict | None:
    """One preference record (``messages`` ending on a user turn, ``chosen``, ``rejected``) to token ids.

    The prompt is the chat rendered with the generation prompt, exactly what the model sees at inference; each
    reply is the assistant turn's text up to and including the end token. Over-long pairs (``max_length`` per
    side, prompt + reply): ``"truncate"`` keeps the *last* ``max_prompt_length`` prompt tokens and the *first*
    tokens of each reply (a cut reply loses its end token, as in TRL); ``"drop"`` returns None.
    """
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        raise SampleError(index, "messages", "must be a non-empty chat ending on a user turn (the prompt)")
    replies = {}
    for key in ("chosen", "rejected"):
        reply = record.get(key)
        if not isinstance(reply, str) or not reply.strip():
            raise SampleError(index, key, "must be a non-empty string (the assistant's reply)")
        chat = messages + [{"role": "assistant", "content": reply}]
        validate_messages(chat, index)
        text, spans = assistant_char_spans(tokenizer, chat, chat_template, end_token)
        start, end = spans[-1]
        replies[key] = (text[:start], text[start:end])
    # assistant_char_spans checked that the chat renders prefix by prefix: both prompts are the generation prompt
    prompt = tokenizer(replies["chosen"][0], add_special_tokens=False).input_ids
    chosen = tokenizer(replies["chosen"][1], add_special_tokens=False).input_ids
    rejected = tokenizer(replies["rejected"][1], add_special_tokens=False).input_ids
    if max_length is not None and len(prompt) + max(len(chosen), len(rejected)) > max_length:
        if overlong == "drop":
            return None
        if overlong != "truncate":
            raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
        keep = min(len(prompt), max_prompt_length or max_length // 2)
        prompt = prompt[len(prompt) - keep:]
        room = max_length - len(prompt)
        if room <= 0:
            raise ValueError(f"max_prompt_length={max_prompt_length} leaves no room for a reply in "
                             f"max_length={max_length}")
        chosen, rejected = chosen[:room], rejected[:room]
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def tokenise_preferences(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None,
                         end_token: str | None = None, max_length: int | None = None,
                         max_prompt_length: int | None = None,
                         overlong: Literal["truncate", "drop"] = "truncate") -> datasets.Dataset:
    """A whole preference dataset to ``prompt_ids, chosen_ids, rejected_ids`` columns (dropped pairs removed)."""
    rows = []
    for i, record in enumerate(ds):
        pair = tokenise_pair(record, tokenizer, chat_template, end_token, max_length, max_prompt_length,
                             overlong, index=i)
        if pair is not None:
            rows.append(pair)
    if not rows:
        raise ValueError(f"no preference pair fits max_length={max_length}; raise it or use overlong='truncate'")
    return datasets.Dataset.from_list(rows)


class PreferenceCollator:
    """Pairs to one batch of ``2B`` rows: the B prompt+chosen rows, then the B prompt+rejected rows.

    Right-padded; ``completion_mask`` is 1 on reply tokens (what is scored), ``attention_mask`` on real tokens.
    The same layout TRL's ``DataCollatorForPreference`` builds, so batches of either work with both.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, pairs: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = [(p["prompt_ids"], p[side]) for side in ("chosen_ids", "rejected_ids") for p in pairs]
        width = max(len(a) + len(b) for a, b in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        completion = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (prompt, reply) in enumerate(rows):
            n = len(prompt) + len(reply)
            ids[r, :n] = torch.tensor(list(prompt) + list(reply))
            attention[r, :n] = 1
            completion[r, len(prompt):n] = 1
        return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


def make_preference_loader(pairs: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                           shuffle: bool = True, seed: int = 0) -> DataLoader:
    """A DataLoader of preference batches (``batch_size`` pairs = ``2 * batch_size`` rows)."""
    rows = pairs.select_columns(list(PAIR_KEYS)).to_list()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      collate_fn=PreferenceCollator(pad))


# ---------------------------------------------------------------- the loss
def sequence_logps(model, batch: dict) -> torch.Tensor:
    """Per row, the summed log-probability of the reply tokens (``completion_mask``) given everything before.

    Logits are computed for the reply tokens only (ftlib.loss): the prompt is context, never scored."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return summed_logps(model, inputs, labels)


@dataclass
class DPOOutput:
    """The loss and what to watch: per-pair implicit rewards, their margin, and the reward accuracy."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    def metrics(self) -> dict[str, float]:
        return {"loss": float(self.loss.detach()), "margin": float(self.margins.mean()),
                "accuracy": float((self.margins > 0).float().mean()),
                "chosen_reward": float(self.chosen_rewards.mean()),
                "rejected_reward": float(self.rejected_rewards.mean())}


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> DPOOutput:
    """The DPO (sigmoid) loss from the four sequence log-probabilities of each pair, averaged over pairs."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return DPOOutput(loss, chosen_rewards.detach(), rejected_rewards.detach())


def reference_context(policy, reference):
    """How to get reference log-probs: a separate frozen model, or the LoRA policy with its adapters switched off."""
    if reference is not None:
        return reference, contextlib.nullcontext()
    if hasattr(policy, "disable_adapter"):  # a peft model: base weights without the adapters = the start point
        return policy, policy.disable_adapter()
    raise ValueError("no reference model: pass reference= (a frozen copy of the starting model), or train LoRA "
                     "adapters so the policy with adapters disabled serves as the reference")


def compute_dpo_loss(policy, batch: dict, reference=None, beta: float = 0.1) -> DPOOutput:
    """Policy forward (with gradients) and reference forward (without) on one preference batch, then the loss."""
    policy_logps = sequence_logps(policy, batch)
    ref_model, context = reference_context(policy, reference)
    with torch.no_grad(), context:
        ref_logps = sequence_logps(ref_model, batch)
    policy_chosen, policy_rejected = policy_logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)


# ---------------------------------------------------------------- a plain training loop
@dataclass
class DPOConfig:
    beta: float = 0.1
    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    schedule: str = "linear"  # "cosine" | "linear" | "constant" (ftlib.train.lr_lambda)
    warmup_steps: int = 0
    max_steps: int | None = None  # None: one pass over the loader
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: only at the end (when an eval loader is given)
    seed: int = 0
    progress: bool = True


@dataclass
class DPOResult:
    step: int
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def evaluate_dpo(policy, loader, reference=None, beta: float = 0.1) -> dict[str, float]:
    """Loss, mean margin and reward accuracy over held-out pairs (each pair weighted equally)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    outs = [compute_dpo_loss(policy, {k: v.to(device) for k, v in b.items()}, reference, beta) for b in loader]
    policy.train(was_training)
    chosen = torch.cat([o.chosen_rewards for o in outs])
    rejected = torch.cat([o.rejected_rewards for o in outs])
    return DPOOutput(-F.logsigmoid(chosen - rejected).mean(), chosen, rejected).metrics()


def train_dpo(policy, loader, config: DPOConfig, reference=None, eval_loader=None) -> DPOResult:
    """Train ``policy`` in place with DPO; the reference (if given) is frozen. Returns per-step metrics."""
    cfg = config
    torch.manual_seed(cfg.seed)
    device = next(policy.parameters()).device
    if reference is not None:
        reference.eval().requires_grad_(False)
    policy.train()
    total = cfg.max_steps or len(loader) // cfg.grad_accum
    if total <= 0:
        raise ValueError(f"nothing to train: {len(loader)} batches with grad_accum={cfg.grad_accum}")
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = LambdaLR(optimizer, lr_lambda(cfg.schedule, cfg.warmup_steps, total))
    result = DPOResult(step=0)
    batches = _forever(loader)
    for step in tqdm(range(1, total + 1), desc="dpo", disable=not cfg.progress):
        t0 = time.perf_counter()
        outs = []
        for _ in range(cfg.grad_accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            out = compute_dpo_loss(policy, batch, reference, cfg.beta)
            (out.loss / cfg.grad_accum).backward()
            outs.append(out)
        chosen = torch.cat([o.chosen_rewards for o in outs])
        rejected = torch.cat([o.rejected_rewards for o in outs])
        row = DPOOutput(torch.stack([o.loss.detach() for o in outs]).mean(), chosen, rejected).metrics()
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"DPO loss became {row['loss']} at step {step}; lower the learning rate")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row.update(step=step, lr=lr, grad_norm=grad_norm, seconds=time.perf_counter() - t0)
        if eval_loader is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
            row.update({f"eval_{k}": v for k, v in evaluate_dpo(policy, eval_loader, reference, cfg.beta).items()})
        result.history.append(row)
        result.step = step
    policy.eval()
    return result


def _forever(loader):
    """Batches without end: a new pass (new shuffle) each time the loader is exhausted."""
    while True:
        yield from loader


def plot_dpo(history: list[dict], axes=None):
    """Loss, reward margin and reward accuracy per step (held-out values as points where logged)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    steps = [r["step"] for r in history]
    for ax, key, title in zip(axes, ("loss", "margin", "accuracy"), ("DPO loss", "reward margin", "reward accuracy")):
        ax.plot(steps, [r[key] for r in history], label="train batch", alpha=0.5)
        window = 5
        values = [r[key] for r in history]
        smooth = [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1])
                  for i in range(len(values))]
        ax.plot(steps, smooth, label=f"mean of {window}")
        evals = [(r["step"], r[f"eval_{key}"]) for r in history if f"eval_{key}" in r]
        if evals:
            ax.plot(*zip(*evals), "o", label="held-out")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return axes
