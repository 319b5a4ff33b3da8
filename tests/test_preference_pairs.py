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
    {"instruction": "Describe the sky.", "input": "", "output": "The sky is blue today."},
]


def test_short_answer_records_keep_plain_questions_with_short_answers():
    kept = short_answer_records(RECORDS, max_answer_chars=120)
    assert [r["instruction"] for r in kept] == ["Name a primary colour.", "Translate 'cat' into French.",
                                                "Summarise this.", "What is 2 + 2?", "Describe the sky."]
    with pytest.raises(ValueError, match="positive"):
        short_answer_records(RECORDS, 0)
    twice = RECORDS + [dict(RECORDS[0], output="Blue.")]  # the same instruction again: kept once
    assert len(short_answer_records(twice)) == 5
    assert [r["output"] for r in short_answer_records(RECORDS[:5], exclude={"Name a primary colour.",
                                                                            "Summarise this.\n\nA long text."})] == \
        ["Chat.", " 4 "]


def test_stop_pairs_chosen_is_the_answer_and_rejected_runs_on_past_it():
    pairs = stop_pairs(RECORDS)
    # "Short." is one word: it cannot be cut short, so it gets "repeat"; the sky can
    assert pairs["kind"] == ["repeat", "next-task", "repeat", "repeat", "next-task"]
    assert pairs["chosen"] == ["Red.", "Chat.", "Short.", "4", "The sky is blue today."]
    assert pairs["rejected"][0] == "Red.\nRed.\nRed."
    assert pairs["rejected"][1] == "Chat.\nSummarise this.\n\nA long text.\nShort."  # the next task, run on
    assert pairs["rejected"][2] == "Short.\nShort.\nShort."
    assert pairs["rejected"][4] == "The sky is blue today.\nName a primary colour.\nRed."  # wraps round
    assert pairs["messages"][2] == [{"role": "user", "content": "Summarise this.\n\nA long text."}]
    cut = stop_pairs([RECORDS[0], RECORDS[1], RECORDS[5]])  # red, cat, the sky: the sky comes third
    assert cut["kind"] == ["repeat", "next-task", "cut-short"] and cut["rejected"][2] == "The sky"
    assert ramble("The sky is blue today.", "cut-short") == "The sky"
    for p in pairs:
        if p["kind"] != "cut-short":
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
    with pytest.raises(ValueError, match="one-word"):
        ramble("Red.", "cut-short")


def test_tokenised_pairs_differ_where_the_end_token_comes(tokenizer):
    """In the article's template a reply is its text + newline + end token. Rambling pairs first differ at the
    chosen reply's end token (where the rejected one goes on); cut-short pairs where the rejected one ends (its
    newline, where the chosen one goes on with the answer)."""
    records = RECORDS + [{"instruction": "Name two fruits.", "input": "", "output": "Apples and pears."}]
    text = stop_pairs(records)
    pairs = dpo.tokenise_preferences(text, tokenizer, chat_template=ARTICLE_CHAT_TEMPLATE)
    eos = tokenizer.eos_token_id
    assert "cut-short" in text["kind"]
    for p, kind in zip(pairs, text["kind"]):
        chosen, rejected = p["chosen_ids"], p["rejected_ids"]
        assert chosen[-1] == eos and rejected[-1] == eos
        first_diff = next(i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b)
        if kind == "cut-short":
            assert first_diff == len(rejected) - 2 and tokenizer.decode(rejected[first_diff:-1]) == "\n"
        else:
            assert first_diff == len(chosen) - 1
