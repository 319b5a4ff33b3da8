"""LoRA through `peft`: freeze the model, learn a low-rank update ``B @ A`` beside chosen linear layers.

A layer's weight W (d_out x d_in) becomes W + (alpha / r) * B @ A with A (r x d_in) and B (d_out x r); B starts
at zero, so training begins exactly at the pretrained model. Only A and B are trained.
"""
from __future__ import annotations

import contextlib
import warnings

from peft import LoraConfig, PeftModel, get_peft_model

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0,
             target_modules: tuple[str, ...] | list[str] = DEFAULT_TARGETS) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters on ``target_modules`` (all attention and MLP projections)."""
    if r <= 0:
        raise ValueError(f"LoRA rank r must be positive, got {r}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        task_type="CAUSAL_LM", bias="none")
    with _quiet_peft():
        return get_peft_model(model, config)


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model: a FutureWarning
    about peft's code, not the learner's, in every notebook that wraps or loads adapters."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def count_parameters(model) -> dict[str, int]:
    """Trainable and total parameter counts (the headline number of LoRA)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "percent": round(100 * trainable / total, 3)}


def training_state_bytes(model) -> int:
    """Memory for weights + gradients + AdamW's two moments (activations come on top and do not depend on LoRA).

    Every weight is held once; every *trainable* weight adds a gradient and two optimizer moments of its dtype.
    That is why full fine-tuning needs about four times the weights and LoRA barely more than the weights.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + sum(3 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def merge_lora(model):
    """Fold the adapters into the base weights and return a plain model (no peft at inference time)."""
    return model.merge_and_unload()


def load_adapter(base_model, adapter_dir: str) -> PeftModel:
    """Attach adapters saved with ``peft_model.save_pretrained(adapter_dir)`` to a base model."""
    with _quiet_peft():
        return PeftModel.from_pretrained(base_model, adapter_dir)
