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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import datasets
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ftlib.config import option
from ftlib.loss import sequence_logps
from ftlib.objective import Objective, to_device
from ftlib.samples import assistant_char_spans, pad_token_id
from ftlib.schema import IGNORE_INDEX, SampleError, validate_messages
from ftlib.train import TrainConfig, TrainResult, train

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
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      collate_fn=PreferenceCollator(pad_token_id(tokenizer)))


# ---------------------------------------------------------------- the loss
def reply_labels(batch: dict) -> tuple[dict, torch.Tensor]:
    """A preference batch as ``ftlib.loss.sequence_logps`` takes it: the model inputs, and labels that keep only the
    reply tokens (``completion_mask``), so the prompt is context, never scored (logits only where it is trained)."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, labels


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


def compute_dpo_loss(policy, batch: dict, reference=None, beta: float = 0.1,
                     ref_logps: torch.Tensor | None = None) -> DPOOutput:
    """Policy forward (with gradients) and reference forward (without) on one preference batch, then the loss.
    ``ref_logps``: the reference's sequence log-probs of this batch, computed before (then no reference forward)."""
    policy_logps = sequence_logps(policy, *reply_labels(batch))
    if ref_logps is None:
        ref_model, context = reference_context(policy, reference)
        with torch.no_grad(), context:
            ref_logps = sequence_logps(ref_model, *reply_labels(batch))
    elif ref_logps.shape != policy_logps.shape:
        raise ValueError(f"reference log-probs for {ref_logps.shape[0]} rows given, the batch has "
                         f"{policy_logps.shape[0]}: compute them on the same loader, unshuffled")
    policy_chosen, policy_rejected = policy_logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.to(policy_logps.dtype).chunk(2)
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)


# ---------------------------------------------------------------- training: ftlib.train's loop, DPO's objective
class DPOObjective(Objective):
    """The DPO loss as an objective of ``ftlib.train.train``: the unit is a pair, so a step's loss is the mean over
    its pairs whatever the batch sizes, and the margin, reward accuracy and rewards are logged beside it."""

    name = "dpo"
    unit = "pairs"

    def __init__(self, reference=None, beta: float = 0.1):
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.reference, self.beta = reference, beta

    def prepare(self, model) -> None:
        if self.reference is not None:
            self.reference.eval().requires_grad_(False)
        elif not hasattr(model, "disable_adapter"):
            reference_context(model, None)  # raises: no reference and no adapters to switch off, said before step 1

    def units(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // 2  # chosen rows, then as many rejected rows

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        out = compute_dpo_loss(model, batch, self.reference, self.beta)
        n = out.margins.numel()
        sums = {"margin": out.margins.sum(), "accuracy": (out.margins > 0).sum(),
                "chosen_reward": out.chosen_rewards.sum(), "rejected_reward": out.rejected_rewards.sum()}
        return out.loss * n, n, sums

    def evaluate(self, model, loader, dtype: torch.dtype | None = None) -> dict[str, float]:
        return evaluate_dpo(model, loader, self.reference, self.beta, dtype=dtype)


@dataclass
class DPOConfig(TrainConfig):
    """``TrainConfig`` with DPO's defaults: a small learning rate, linear decay, torch's AdamW betas, no decay."""

    output_dir: str = option("outputs/dpo", "where metrics.jsonl, run_config.json and checkpoints go")
    learning_rate: float = option(5e-6, "peak learning rate", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay (not on norms and biases)", ge=0)
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW betas", ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = option("linear", "decay after warmup")
    save_final: bool = option(False, "a resumable checkpoint at the end (the whole policy + optimizer); "
                                     "a SIGINT/SIGTERM stop always saves")
    beta: float = option(0.1, "how far the policy may move from the reference (small: far)", gt=0)



@torch.no_grad()
def reference_logps(policy, loader, reference=None, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """The reference's sequence log-probs of every batch of an unshuffled ``loader``, to pass to ``evaluate_dpo``
    as ``ref_logps``: the reference never changes, so held-out pairs need its forward once, not at every
    evaluation (TRL's ``precompute_ref_log_probs``)."""
    device = next(policy.parameters()).device
    ref_model, context = reference_context(policy, reference)
    was_training = ref_model.training
    ref_model.eval()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), context:
        out = [sequence_logps(ref_model, *reply_labels(to_device(b, device))).float() for b in loader]
    ref_model.train(was_training)
    return out


@torch.no_grad()
def evaluate_dpo(policy, loader, reference=None, beta: float = 0.1, dtype: torch.dtype | None = None,
                 ref_logps: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Loss, mean margin and reward accuracy over held-out pairs (each pair weighted equally); ``dtype``:
    autocast to it (as training does); ``ref_logps``: ``reference_logps`` of the same loader (one forward less)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    batches = list(loader)
    if ref_logps is not None and len(ref_logps) != len(batches):
        raise ValueError(f"reference log-probs for {len(ref_logps)} batches given, the loader has {len(batches)}")
    refs = ref_logps if ref_logps is not None else [None] * len(batches)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        outs = [compute_dpo_loss(policy, to_device(b, device), reference, beta, ref) for b, ref in zip(batches, refs)]
    policy.train(was_training)
    chosen = torch.cat([o.chosen_rewards for o in outs])
    rejected = torch.cat([o.rejected_rewards for o in outs])
    return DPOOutput(-F.logsigmoid(chosen - rejected).mean(), chosen, rejected).metrics()


def train_dpo(policy, loader, config: DPOConfig, reference=None, eval_loader=None) -> TrainResult:
    """Train ``policy`` in place with DPO on ``ftlib.train.train`` (checkpoints, resume with ``config.resume``,
    SIGINT save, autocast, the NaN stop); the reference (if given) is frozen. Returns per-step metrics; the policy
    is left in eval mode."""
    result = train(policy, loader, config, eval_loader=eval_loader, objective=DPOObjective(reference, config.beta))
    policy.eval()
    return result
