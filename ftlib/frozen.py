"""Frozen weights in the compute dtype, cast once per run instead of once per matmul.

Why: bf16 autocast keeps fp32 weights and casts each one to bf16 every time a matmul uses it. For a trained
weight that is the point (the fp32 master copy takes the update). A *frozen* weight - the base model under LoRA -
never changes, yet autocast casts it again in every forward and keeps the copy for backward: on a 2-core CPU that
was a fifth of a Gemma-3-270M LoRA step (2,840 ``copy_`` calls, docs/benchmarks.md). Here each frozen linear
weight gets its bf16 copy once, before the first step; autocast then finds bf16 and casts nothing. The arithmetic
is unchanged: autocast's cast and ours are the same round-to-nearest, so the matmuls see the same operands.

The fp32 values are kept and put back for anything that reads the weights as the model's own (checkpoints, the
merge of LoRA adapters, the end of training), so a run saves exactly what it saves today. Embeddings and the LM
head keep their fp32 tensors: they are often one tied tensor, and the embedding's lookup is not a matmul. A frozen
head's bf16 copy is made once too, but only lent to ``ftlib.loss`` (``loss.lend_head_cast``), which applies the
head itself to the trained rows; without it the loss cast the 168M-value head of Gemma-3 again in every step.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ftlib.loss import causal_lm, lend_head_cast


class FrozenCast:
    """The frozen ``nn.Linear`` weights of a model, held in fp32 and in ``dtype``, swapped in and out by pointer."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        skip = _embedding_weights(model)
        self.weights = [m.weight for m in model.modules()
                        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
                        and type(m.weight.data) is torch.Tensor and m.weight.dtype == torch.float32
                        and id(m.weight) not in skip]
        self.master = [w.data for w in self.weights]
        self.low = [w.data.to(dtype) for w in self.weights]
        head = getattr(causal_lm(model), "get_output_embeddings", lambda: None)()
        frozen_head = head is not None and not head.weight.requires_grad and head.weight.dtype == torch.float32
        self.head = (head.weight, head.weight.data.to(dtype)) if frozen_head else None
        self.active = False

    def cast(self) -> None:
        """Point every frozen weight at its low-precision copy (no copying: the copies were made once)."""
        for w, low in zip(self.weights, self.low):
            w.data = low
        if self.head:
            lend_head_cast(*self.head)
        self.active = True

    def restore(self) -> None:
        """Point every frozen weight back at its original fp32 tensor."""
        for w, master in zip(self.weights, self.master):
            w.data = master
        if self.head:
            lend_head_cast(self.head[0], None)
        self.active = False

    @contextlib.contextmanager
    def original(self) -> Iterator[None]:
        """The fp32 weights for the duration (to save a checkpoint), then the low-precision ones again."""
        was_active = self.active
        self.restore()
        try:
            yield
        finally:
            if was_active:
                self.cast()


@contextlib.contextmanager
def frozen_in_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[FrozenCast | None]:
    """Hold ``model``'s frozen linear weights in ``dtype`` inside the block (``None``: do nothing), fp32 after."""
    if dtype is None or dtype == torch.float32:
        yield None
        return
    frozen = FrozenCast(model, dtype)
    frozen.cast()
    try:
        yield frozen
    finally:
        frozen.restore()


def _embedding_weights(model: torch.nn.Module) -> set[int]:
    """ids of the embedding weights and of the LM head's (often the same tied tensor): left in fp32."""
    ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(causal_lm(model), "get_output_embeddings", lambda: None)()
    if head is not None:
        ids.add(id(head.weight))
    return ids
