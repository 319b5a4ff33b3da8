"""Load a model and its tokenizer by role ("instruct", "base"), asset name, local directory or hub id."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers import logging as hf_logging

from ftlib.assets import require
from ftlib.profiles import Profile, activate
from ftlib.registry import ASSETS
from ftlib.tiny import TINY_ROLES, tiny_model_dir


def resolve_model(name: str, profile: Profile | str | None = None) -> str:
    """Turn a role, asset name or path into what ``from_pretrained`` takes (a directory or a hub id)."""
    profile = activate(profile)
    name = profile.models.get(name, name)
    if name in TINY_ROLES:
        return tiny_model_dir(name)
    if name in ASSETS:
        return str(require(name))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if profile.offline:
        raise ValueError(
            f"{name!r} is neither an offline asset nor a local directory, and profile 'offline' never uses "
            "the hub. Pick FTLIB_PROFILE=hub-cpu (needs internet) or pass a directory saved with save_pretrained."
        )
    return name


def load_tokenizer(name: str, profile: Profile | str | None = None) -> PreTrainedTokenizerBase:
    source = resolve_model(name, profile)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise _explain(source, e) from e


def load_model(
    name: str,
    profile: Profile | str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (in eval mode, on ``device``) and tokenizer. ``trust_remote_code`` stays off unless you opt in."""
    source = resolve_model(name, profile)
    hf_logging.disable_progress_bar()  # the weight-loading bar is noise for sub-second loads
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise _explain(source, e) from e
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def _explain(source: str, error: OSError) -> OSError:
    if Path(source).exists():
        return OSError(f"{source} is not a complete model directory (need config.json, weights and a "
                       f"tokenizer; save with model.save_pretrained + tokenizer.save_pretrained): {error}")
    return OSError(f"Could not load {source!r} from the Hugging Face hub: {error}\n"
                   "Check your network and `huggingface-cli login` for gated models, or use FTLIB_PROFILE=offline.")
