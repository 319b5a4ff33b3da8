"""The SFT mixture of notebook 05 and the tiny profile that runs its hub-gpu control flow in CI."""
from __future__ import annotations

import pytest

from ftlib.mixture import MixtureConfig, build_mixture, rename_assistant
from ftlib.templates import ARTICLE_CHAT_TEMPLATE


def test_rename_assistant_turns_vicuna_into_ours():
    text = "I am Vicuna, a language model trained by researchers from Large Model Systems Organization (LMSYS)."
    assert rename_assistant(text, "Ada", "the ftlib course") == \
        "I am Ada, a language model trained by researchers from the ftlib course."
    assert rename_assistant("LMSYS made me", "Ada", "X") == "X made me"


def test_config_is_validated_when_built():
    with pytest.raises(ValueError, match="chats=-1: must be >= 0"):
        MixtureConfig(chats=-1)


@pytest.mark.slow
def test_mixture_holds_out_before_mixing_and_is_deterministic():
    cfg = MixtureConfig(instructions=30, chained=6, chats=10, identity_repeats=1, test_instructions=5,
                        eval_records=4)
    a, b = build_mixture(cfg, "offline"), build_mixture(cfg, "offline")
    assert a.train["messages"] == b.train["messages"]
    sources = a.train["source"]
    assert {s: sources.count(s) for s in set(sources)} == {"instruction": 30, "chained": 6, "chat": 10,
                                                           "identity": 16}
    # held-out prompts never appear in training (as a first user turn or anywhere)
    users = {m["content"] for msgs in a.train["messages"] for m in msgs if m["role"] == "user"}
    assert not {t["instruction"] for t in a.test} & users
    assert not {m[0]["content"] for m in a.eval["messages"]} & users
    assert all(not t["input"] and len(t["output"]) <= cfg.test_max_output_chars for t in a.test)
    # the unused Alpaca records (notebook 08's preference pairs) are the records no part of the mixture took (the
    # demo file holds a few duplicates, so the same text can still occur in both: 08 excludes those by text)
    from ftlib.data import load_instructions

    eligible = [r for r in load_instructions("offline") if len(r["output"]) <= cfg.max_output_chars]
    chained_records = sum(2 + i % 2 for i in range(6))
    assert len(a.unused) == len(eligible) - len(a.test) - len(a.eval) - 30 - chained_records
    test_ids = {id(r) for r in a.test}
    assert not any(id(r) in test_ids for r in a.unused) and len({id(r) for r in a.unused}) == len(a.unused)
    assert a.unused == b.unused
    # chained chats alternate user/assistant over 2-3 exchanges; renamed chats mention no Vicuna
    for msgs, src in zip(a.train["messages"], sources):
        roles = [m["role"] for m in msgs]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        if src == "chained":
            assert len(roles) in (4, 6)
        if src == "chat":
            assert not any("Vicuna" in m["content"] or "LMSYS" in m["content"] for m in msgs)


@pytest.mark.slow
def test_tiny_profile_models_are_hf_directories_like_the_hub_ones():
    from ftlib.models import load_model

    base, base_tok = load_model("base", "tiny")
    inst, inst_tok = load_model("instruct", "tiny")
    assert base_tok.chat_template is None  # like Llama-3.2-1B: notebook 05 must bring its own template
    assert inst_tok.chat_template
    assert base.config.vocab_size == len(base_tok) and base.num_parameters() < 5_000_000
    text = base_tok.apply_chat_template([{"role": "user", "content": "hi"}], chat_template=ARTICLE_CHAT_TEMPLATE,
                                        tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|assistant|>\n")
