"""What the training loop minimises: an :class:`Objective` scores a batch, ``ftlib.train.train`` does the rest.

The default, :class:`TokenLoss`, is SFT's cross-entropy on batches ready for ``model(**batch)`` with HF-style
``labels`` (-100 = not trained; not shifted), summed over the trained tokens so that the loop can divide by the
step's tokens over every micro-batch and process. ``ftlib.dpo.DPOObjective`` is the other one. Kept apart from
the loop so that a new objective is read (and written) without the loop's checkpoint and signal machinery.
"""
from __future__ import annotations

import torch

from ftlib.distributed import all_reduce_sum
from ftlib.loss import token_losses

__all__ = ["Objective", "TokenLoss", "autocast", "evaluate_loss", "to_device", "token_loss_sum"]


def to_device(batch: dict, device: torch.device) -> dict:
    """Move the tensors of a batch; leave flags such as ``use_cache=False`` as they are."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def token_loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over trained tokens and their count (labels are shifted HF-style; logits are computed
    only where a token is trained: see ftlib.loss)."""
    losses, mask = token_losses(model, {k: v for k, v in batch.items() if k != "labels"}, batch["labels"])
    return losses.sum(), int(mask.sum())


@torch.no_grad()
def evaluate_loss(model, loader, device: torch.device | None = None, dtype: torch.dtype | None = None) -> float:
    """Mean per-token loss over a loader (the quantity to compare across runs)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, dtype):
            loss, n = token_loss_sum(model, batch)
        total += float(loss)
        count += n
    total, count = all_reduce_sum([total, count])
    model.train(was_training)
    return total / max(count, 1)


class Objective:
    """What the loop minimises. Subclasses say how to score a batch; the loop does everything else.

    ``units(batch)``: how many units (tokens, pairs) the batch holds, known before its forward pass, so that every
    micro-batch's gradient can be scaled by the step's global count at once. ``__call__(model, batch)``:
    ``(loss_sum, n_units, metric_sums)``, the loss *summed* over the batch's units and per-unit metrics summed too;
    the loop divides both by the step's units over all micro-batches and processes. ``evaluate(model, loader,
    dtype)``: held-out metrics, logged with an ``eval_`` prefix.
    """

    name = "train"  # the progress bar's label, recorded in run_config.json
    unit = "tokens"  # the metrics row counts units under this name, and their rate as ``<unit>_per_s``

    def prepare(self, model) -> None:
        """Called once before training (e.g. freeze a reference model)."""

    def units(self, batch: dict) -> int:
        raise NotImplementedError

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, int, dict[str, torch.Tensor | float]]:
        raise NotImplementedError

    def evaluate(self, model, loader, dtype: torch.dtype | None = None) -> dict[str, float]:
        raise NotImplementedError


class TokenLoss(Objective):
    """Supervised fine-tuning: cross-entropy summed over the trained tokens (``labels != -100``)."""

    name = "sft"
    unit = "tokens"

    def units(self, batch: dict) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, int, dict]:
        loss, n = token_loss_sum(model, batch)
        return loss, n, {}

    def evaluate(self, model, loader, dtype: torch.dtype | None = None) -> dict[str, float]:
        return {"loss": evaluate_loss(model, loader, dtype=dtype)}


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 (or another dtype) autocast on ``device``; ``dtype=None``: fp32, autocast off."""
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
