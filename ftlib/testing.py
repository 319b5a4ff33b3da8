"""Test-only models. Library code never imports this module (the import contract in pyproject.toml says so);
the tiny models the library itself uses (the ``tiny`` profile, the exercises) are in ``ftlib.tiny``.
"""
from __future__ import annotations

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig


def tiny_gemma3(vocab_size: int = 512, seed: int = 0, hidden_size: int = 32, layers: int = 2,
                max_positions: int = 512, final_logit_softcapping: float | None = None,
                **overrides) -> Gemma3ForCausalLM:
    """A 2-layer Gemma-3 text model with random weights: one sliding-window layer (window 4) and one global one.

    Gemma-3-270M itself has no final logit soft-capping; set ``final_logit_softcapping`` to test code that must
    reproduce it (as Gemma-2 does)."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
        query_pre_attn_scalar=hidden_size // 4, max_position_embeddings=max_positions, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * (layers // 2) + ["sliding_attention"] * (layers % 2),
        final_logit_softcapping=final_logit_softcapping, **{"tie_word_embeddings": True, "bos_token_id": 2,
                                                            "eos_token_id": 1, "pad_token_id": 0, **overrides},
    )
    return Gemma3ForCausalLM(config).eval()
