"""ftlib.preference_pairs: pairs whose chosen reply is the answer and stop, the rejected one the same answer run on."""
import pytest

from ftlib import dpo
from ftlib.preference_pairs import ramble, short_answer_records, stop_pairs
from ftlib.templates import ARTICLE_CHAT_TEMPLATE

RECORDS = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {"instruction": "Translate 'cat' into French.", "input": "", "output": "Chat."},
    {"instruction": "Summarise this.", "input": "A long text.", "output": "Short."},  # its input joins the question
    {"instruction": "Write an essay.", "input": "", "output": "x" * 500},  # too long an answer: skipped
    {"instruction": "What is 2 + 2?", "input": "", "output": " 4 "},
]


def test_short_answer_records_keep_plain_questions_with_short_answers():
    kept = short_answer_records(RECORDS, max_answer_chars=120)
    assert [r["instruction"] for r in kept] == ["Name a primary colour.", "Translate 'cat' into French.",
                                                "Summarise this.", "What is 2 + 2?"]
    with pytest.raises(ValueError, match="positive"):
        short_answer_records(RECORDS, 0)
    twice = RECORDS + [dict(RECORDS[0], output="Blue.")]  # the same instruction again: kept once
    assert len(short_answer_records(twice)) == 4
    assert [r["output"] for r in short_answer_records(RECORDS, exclude={"Name a primary colour.",
                                                                        "Summarise this.\n\nA long text."})] == \
        ["Chat.", " 4 "]


def test_stop_pairs_chosen_is_the_answer_and_rejected_runs_on_past_it():
    pairs = stop_pairs(RECORDS)
    assert pairs["kind"] == ["repeat", "next-task", "repeat", "next-task"]
    assert pairs["chosen"] == ["Red.", "Chat.", "Short.", "4"]
    assert pairs["rejected"][0] == "Red.\nRed.\nRed."
    assert pairs["rejected"][1] == "Chat.\nSummarise this.\n\nA long text.\nShort."  # the next task, run on
    assert pairs["rejected"][2] == "Short.\nShort.\nShort."
    assert pairs["rejected"][3] == "4\nName a primary colour.\nRed."  # the last one wraps round
    assert pairs["messages"][2] == [{"role": "user", "content": "Summarise this.\n\nA long text."}]
    for p in pairs:
        assert p["rejected"].startswith(p["chosen"]) and len(p["rejected"]) > len(p["chosen"])
    assert stop_pairs(RECORDS, n_pairs=2)["chosen"] == ["Red.", "Chat."]
    assert stop_pairs(RECORDS, n_pairs=2)["rejected"][1] == "Chat.\nSummarise this.\n\nA long text.\nShort."


def test_stop_pairs_say_what_is_wrong_with_bad_input():
    with pytest.raises(ValueError, match="only 1 record"):
        stop_pairs(RECORDS[:1])
    with pytest.raises(ValueError, match="positive"):
        stop_pairs(RECORDS, n_pairs=0)
    with pytest.raises(ValueError, match="unknown ramble kind"):
        ramble("a", "shout")
    with pytest.raises(ValueError, match="next_record"):
        ramble("a", "next-task")


def test_tokenised_pairs_differ_only_after_the_answer(tokenizer):
    """In the article's template the chosen reply is answer + end token; the rejected one starts with the same
    answer tokens and carries on where the chosen one ends: the end token is the first token that differs."""
    pairs = dpo.tokenise_preferences(stop_pairs(RECORDS), tokenizer, chat_template=ARTICLE_CHAT_TEMPLATE)
    eos = tokenizer.eos_token_id
    for p in pairs:
        chosen, rejected = p["chosen_ids"], p["rejected_ids"]
        assert chosen[-1] == eos and rejected[-1] == eos
        first_diff = next(i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b)
        assert first_diff == len(chosen) - 1  # the chosen reply's end token, where the rejected one goes on
        assert len(rejected) > len(chosen)
