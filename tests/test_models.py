"""Both offline models load with the hub switched off, and behave like the article says."""
import os

import pytest
import torch

from ftlib import profiles
from ftlib.models import resolve_model
from ftlib.profiles import get_profile

ALPACA_VERB_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nFind the verb in the following sentence.\n\n"
    "### Input:\nJohn and Mary walk across the street to the bookstore.\n\n### Response:\n"
)


def _greedy(model, tok, prompt, n=20):
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)


def test_offline_profile_turns_the_hub_off_when_activated_and_refuses_hub_ids(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it: take it away to see the profile set it
    monkeypatch.setattr(profiles, "_SET_OFFLINE", False)
    assert get_profile("offline").offline and "HF_HUB_OFFLINE" not in os.environ  # a lookup changes nothing
    assert profiles.activate("offline").name == "offline"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    profiles.activate("hub-cpu")  # a hub profile takes back what activate set ...
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profiles.activate("offline")
    profiles.activate("hub-cpu")  # ... never what the user set
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(ValueError, match="profile 'offline' never uses the hub"):
        resolve_model("some-org/some-model", "offline")


def test_instruct_model_answers_the_verb_question(instruct):
    model, tok = instruct
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    assert "walk" in _greedy(model, tok, ALPACA_VERB_PROMPT).lower()


def test_base_model_loads_and_has_no_chat_template(base):
    model, tok = base
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert tok.chat_template is None
    assert 250e6 < model.num_parameters() < 300e6
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()
