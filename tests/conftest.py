"""Shared fixtures. Tests run against the offline profile and never touch the hub."""
import os

os.environ.setdefault("FTLIB_PROFILE", "offline")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from ftlib.models import load_model, load_tokenizer  # noqa: E402
from ftlib.testing import tiny_llama_for  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (loads in well under a second)."""
    return load_tokenizer("instruct")


@pytest.fixture()
def tiny_model(tokenizer):
    return tiny_llama_for(tokenizer)


@pytest.fixture(scope="session")
def instruct():
    """The real offline instruct model (fp32) and its tokenizer: only for tests that need a trained model."""
    torch.manual_seed(0)
    return load_model("instruct", dtype=torch.float32)


@pytest.fixture(scope="session")
def base():
    return load_model("base", dtype=torch.float32)
