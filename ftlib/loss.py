"""Per-token cross-entropy computed only where a token is trained: one function for SFT, evaluation and DPO.

Why: a causal LM's head projects every position onto the vocabulary, and the loss then throws most of them away
(prompt, padding, other turns: label -100). For Gemma-3-270M the head (640 x 262,144) is bigger than the rest of
the network, so that waste is most of a training step. Here the model runs its own forward with
``logits_to_keep`` = no position (its head then costs nothing) and returns its final hidden states; we keep the
rows whose *next* label is trained and apply the head plus the model's own logit post-processing (Gemma's final
soft-capping) to those rows only, ``chunk_rows`` at a time, with the cross-entropy in fp32. While gradients are
recorded and there is more than one chunk, each chunk is checkpointed (its logits are recomputed in backward), so
peak memory is one chunk of logits whatever the vocabulary. A frozen head (LoRA: the base model's head is not
trained) needs no recomputation: each row's gradient is computed with its chunk in the forward
(``_FrozenHeadLoss``), so nothing vocabulary-wide outlives its chunk and chunks can be small at little cost.

The forward is the model's own call, so DDP, FSDP2, peft and torch.compile wrappers see a normal call, and packed
batches (4D block-causal ``attention_mask``, ``position_ids``) pass through unchanged. An architecture whose forward
does anything else to the logits is not in ``SPLIT_MODEL_TYPES``: it takes the plain full-logits path, with one
warning that says why.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ftlib.schema import IGNORE_INDEX

# Causal LMs whose forward in transformers 5.23 is `logits = lm_head(hidden)` plus, at most, the final soft-capping
# `cap * tanh(logits / cap)` of `config.final_logit_softcapping` (read from modeling_*.py). Not here, for example:
# cohere (multiplies by logit_scale), granite (divides by logits_scaling).
SPLIT_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3",
                               "smollm3", "olmo2"})
CHUNK_ELEMENTS = 2 ** 28  # logits per chunk: 1 GiB in fp32 (1024 rows of Gemma-3's 262,144-token vocabulary)
# A frozen head (LoRA) takes _FrozenHeadLoss: nothing is recomputed there, so small chunks cost little speed.
FROZEN_CHUNK_ELEMENTS = 2 ** 25  # 128 MiB of fp32 logits (128 rows of Gemma-3)

_warned: set[str] = set()
# id(head weight) -> (that weight, its copy in the compute dtype), lent by ftlib.frozen for the length of a run
_head_casts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def lend_head_cast(weight: torch.Tensor, low: torch.Tensor | None) -> None:
    """Let ``_FrozenHeadLoss`` use ``low`` (``weight`` already cast to the compute dtype) instead of casting the
    frozen head in every step; ``None`` takes it back. The caller promises ``weight`` does not change meanwhile."""
    if low is None:
        _head_casts.pop(id(weight), None)
    else:
        _head_casts[id(weight)] = (weight, low)


def _in_dtype(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight.to(dtype)``: the lent copy when there is one (the same round-to-nearest, made once)."""
    lent = _head_casts.get(id(weight))
    if lent is not None and lent[0] is weight and lent[1].dtype == dtype:
        return lent[1]
    return weight.to(dtype)


def _unwrapped(model) -> list:
    """The model and what it wraps: DDP (``.module``), torch.compile (``._orig_mod``), peft, down to the causal LM.

    FSDP2's ``fully_shard`` changes modules in place, so a sharded model is its own causal LM."""
    chain = [model]
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
            if model.active_peft_config.is_prompt_learning:
                return chain  # virtual tokens change the hidden states' length: not a plain causal LM
            model = model.get_base_model()
        else:
            return chain
        chain.append(model)


def causal_lm(model):
    """The Hugging Face causal LM inside DDP, torch.compile and peft (LoRA) wrappers."""
    return _unwrapped(model)[-1]


def split_reason(model) -> str | None:
    """Why ``model``'s loss must use the full-logits path, or None when the head can be applied to trained rows only."""
    chain = _unwrapped(model)
    lm = chain[-1]
    model_type = getattr(getattr(lm, "config", None), "model_type", None)
    if model_type not in SPLIT_MODEL_TYPES:
        return (f"model type {model_type!r} is not in ftlib.loss.SPLIT_MODEL_TYPES (causal LMs known to apply only "
                "the LM head and soft-capping to their logits)")
    if not callable(getattr(lm, "get_output_embeddings", None)) or lm.get_output_embeddings() is None:
        return f"{type(lm).__name__} has no output embeddings (LM head) to apply"
    if any("forward" in vars(m) and not hasattr(m, "_orig_mod") for m in chain):  # torch.compile is fine
        return (f"{type(lm).__name__}.forward is replaced on the instance (e.g. accelerate's autocast wrapper), "
                "so the head must run inside it, in whatever context the patch sets up")
    return None


def token_losses(model, inputs: dict, labels: torch.Tensor, chunk_rows: int | None = None,
                 split: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cross-entropy of every trained next token, and the ``(batch, length - 1)`` mask saying where they are.

    ``inputs`` go to ``model(**inputs)`` as they are (no labels); ``labels`` are Hugging Face style (not shifted,
    -100 = not trained): position t is scored on ``labels[:, t + 1]``. The losses come in the row-major order of the
    mask, so ``labels[:, 1:][mask]`` are their targets. ``split=False`` forces the full-logits path (for checks).
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][mask]
    inputs = {"use_cache": False, **inputs}  # a loss never needs the KV cache
    reason = split_reason(model) if split else "split=False"
    if reason is not None:
        if split and reason not in _warned:
            _warned.add(reason)
            warnings.warn(f"ftlib.loss: computing logits at every position: {reason}", stacklevel=2)
        logits = model(**inputs).logits[:, :-1][mask]
        return F.cross_entropy(logits.float(), targets, reduction="none"), mask
    lm = causal_lm(model)
    head, cap = lm.get_output_embeddings(), getattr(lm.config, "final_logit_softcapping", None)
    keep_none = torch.empty(0, dtype=torch.long, device=labels.device)
    skip_head = torch.is_grad_enabled() and _frozen_linear(head) and not any(hasattr(m, "_orig_mod")
                                                                             for m in _unwrapped(model))
    with _headless(head) if skip_head else contextlib.nullcontext():
        out = model(**inputs, logits_to_keep=keep_none, output_hidden_states=-1)  # -1: only the last (normed) state
    hidden = out.hidden_states[-1]
    if hidden.shape[:2] != labels.shape or out.logits.numel():
        raise RuntimeError(f"ftlib.loss: {type(lm).__name__} returned hidden states {tuple(hidden.shape)} and "
                           f"logits {tuple(out.logits.shape)} for labels {tuple(labels.shape)}; expected the last "
                           "hidden state per token and no logits. Remove its model type from SPLIT_MODEL_TYPES.")
    rows = hidden[:, :-1][mask]
    if torch.is_grad_enabled() and rows.requires_grad and _frozen_linear(head):
        size = chunk_rows or max(1, FROZEN_CHUNK_ELEMENTS // lm.config.vocab_size)
        return _FrozenHeadLoss.apply(rows, head.weight, cap, targets, size), mask
    size = chunk_rows or max(1, CHUNK_ELEMENTS // lm.config.vocab_size)
    chunks = list(zip(rows.split(size), targets.split(size))) or [(rows, targets)]  # empty: keep the graph
    recompute = len(chunks) > 1 and torch.is_grad_enabled() and rows.requires_grad
    losses = [checkpoint(_chunk_losses, head, cap, h, t, use_reentrant=False) if recompute
              else _chunk_losses(head, cap, h, t) for h, t in chunks]
    return torch.cat(losses), mask


def _chunk_losses(head: torch.nn.Module, cap: float | None, hidden: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor:
    """The model's own logits for these rows (head, then soft-capping as its forward does it), then fp32 CE."""
    logits = head(hidden)  # the module, not its weight: a LoRA layer on the head stays correct
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits.float(), targets, reduction="none")


@contextlib.contextmanager
def _headless(head):
    """The model's own forward, asked for no position, still calls its head on zero rows; under autocast that casts
    the whole frozen weight to bf16 and autograd keeps the copy until backward (320 MiB for Gemma-3, for nothing).
    Here the head returns its empty output without touching the weight (torch.compile'd models are left alone: a
    patched method would make them recompile)."""
    head.forward = lambda x: x.new_zeros(*x.shape[:-1], head.out_features)
    try:
        yield
    finally:
        del head.forward


def _frozen_linear(head) -> bool:
    """True when the head is a plain, frozen, hook-free ``nn.Linear`` on an ordinary tensor (LoRA's case: the base
    model's head, often the tied embedding, is not trained). Then ``_FrozenHeadLoss`` may use its weight directly."""
    return (type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad
            and type(head.weight.data) is torch.Tensor and not head._forward_hooks and not head._forward_pre_hooks)


class _FrozenHeadLoss(torch.autograd.Function):
    """Cross-entropy of ``hidden @ weight.T`` (soft-capped if ``cap``) for a frozen head, gradient computed at once.

    Why: with the head frozen, each row's loss depends on its own hidden state only, so its gradient
    ``(softmax - onehot) @ weight`` (a ``hidden``-sized row) can be computed in the forward, chunk by chunk, while that
    chunk's logits exist. Nothing vocabulary-sized is kept for backward and nothing is recomputed: peak memory is one
    chunk of logits, at no extra matmul (the checkpointed path recomputes every chunk's logits). Backward scales each
    row's stored gradient by its upstream gradient (any per-row weights: SFT's mean, DPO's pairs). The arithmetic is
    autograd's: the same dtypes as autocast's linear (bf16 under bf16 autocast), fp32 cross-entropy."""

    @staticmethod
    def forward(ctx, hidden, weight, cap, targets, size):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        losses, grads = [], []
        with torch.autocast(device, enabled=False):
            w = _in_dtype(weight, dtype)  # one cast for all chunks (autocast would recast it every call)
            for h, t in zip(hidden.split(size), targets.split(size)):
                z = F.linear(h.to(dtype), w)
                if cap is not None:
                    capped = torch.tanh(z / cap)
                    z = capped * cap
                logp = F.log_softmax(z.float(), dim=-1)
                losses.append(-logp.gather(1, t[:, None]).squeeze(1))
                g = logp.exp_()  # d loss / d logits = softmax - onehot
                g[torch.arange(len(t), device=g.device), t] -= 1
                g = g.to(dtype)
                if cap is not None:
                    g = g * (1 - capped * capped)
                grads.append((g @ w).to(hidden.dtype))
        ctx.save_for_backward(torch.cat(grads) if grads else hidden.new_zeros(hidden.shape))
        return torch.cat(losses) if losses else hidden.new_zeros(0, dtype=torch.float32)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_losses):
        (grads,) = ctx.saved_tensors
        return grads * grad_losses[:, None].to(grads.dtype), None, None, None, None


def sequence_logps(model, inputs: dict, labels: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """Per row, the summed log-probability of its trained tokens (DPO's ``log p(reply | prompt)``), in fp32."""
    losses, mask = token_losses(model, inputs, labels, chunk_rows)
    rows = mask.nonzero(as_tuple=True)[0]
    return torch.zeros(labels.shape[0], dtype=losses.dtype, device=losses.device).index_add(0, rows, -losses)
