"""Tiny random-weight models: the course model's architecture and tokenizer, a few MB, built in milliseconds.

They serve the ``tiny`` profile (``tiny_model_dir``: CI runs the hub-gpu control flow of notebooks 05-06 with
them), the exercise checks and the unit tests: wherever a model's *mechanics* (shapes, masking, caching,
checkpointing) matter but not its knowledge.
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def tiny_llama(vocab_size: int = 49152, seed: int = 0, hidden_size: int = 32, layers: int = 2,
               max_positions: int = 512, **overrides) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights (about 1.6M parameters at SmolLM2's vocabulary size)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, **{"tie_word_embeddings": True, "bos_token_id": 1,
                                                  "eos_token_id": 2, "pad_token_id": 2, **overrides},
    )
    return LlamaForCausalLM(config).eval()


def tiny_llama_for(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A tiny Llama whose vocabulary and special ids match ``tokenizer``."""
    model = tiny_llama(vocab_size=len(tokenizer), seed=seed, **overrides)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key)
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    return model


TINY_ROLES = ("tiny-base", "tiny-instruct")


def tiny_model_dir(name: str) -> str:
    """A tiny random-weight model saved in HF format under ``$FTLIB_HOME/tiny/<name>``, built once.

    The ``tiny`` profile points its roles here so CI runs the hub-gpu control flow of notebooks 05-09 in seconds:
    ``tiny-base`` has no chat template (like Llama-3.2-1B), ``tiny-instruct`` keeps SmolLM2's. Both use the
    offline SmolLM2 tokenizer, so its asset must be fetched."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    from ftlib.assets import ftlib_home, require

    if name not in TINY_ROLES:
        raise ValueError(f"unknown tiny model {name!r}; choose one of {TINY_ROLES}")
    target = Path(ftlib_home()) / "tiny" / name
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return str(target)
    tokenizer = AutoTokenizer.from_pretrained(require("smollm2-135m-instruct"))
    if name == "tiny-base":
        tokenizer.chat_template = None
    model = tiny_llama_for(tokenizer, seed=0, hidden_size=64, max_positions=2048)
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if name == "tiny-base":  # save_pretrained may still write a template file from the original tokenizer
        (tmp / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((tmp / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    import shutil

    shutil.rmtree(target, ignore_errors=True)  # a half-built one from an interrupted run
    tmp.replace(target)
    return str(target)

