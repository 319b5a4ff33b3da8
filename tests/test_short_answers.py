"""ftlib.short_answers: the set's shape, the scoring rule both ways, scores against ftlib.evaluate, a forced model
end to end, the CLI, and (slow) that no question is in any training source."""
import json
from collections import Counter
from importlib import resources

import pytest
import torch

from ftlib import evaluate as ev
from ftlib import short_answers as sa
from ftlib.generation import Generation


# ---------------------------------------------------------------- the set
def test_set_is_split_in_halves_balanced_by_category():
    dev, test, every = sa.load_short_answers("dev"), sa.load_short_answers("test"), sa.load_short_answers("all")
    assert len(every) >= 40 and len(dev) + len(test) == len(every)
    assert Counter(i["category"] for i in dev) == Counter(i["category"] for i in test)
    assert {"facts", "arithmetic", "words", "translation", "tasks"} == {i["category"] for i in every}
    assert len({i["id"] for i in every}) == len(every)
    assert len({sa.normalise(i["question"]) for i in every}) == len(every)
    for item in every:
        assert set(item) == {"id", "category", "question", "answers", "split"}
        assert item["answers"] and all(sa.normalise(a) for a in item["answers"])
    with pytest.raises(ValueError, match="unknown split"):
        sa.load_short_answers("train")


def test_no_question_contains_its_own_answer():
    """A model that only repeats the question (the base model in chat mode does) must not score."""
    for item in sa.load_short_answers("all"):
        assert not sa.is_right(item["question"], item["answers"]), item["id"]


def test_shots_are_not_questions_of_the_set():
    questions = {sa.normalise(i["question"]) for i in sa.load_short_answers("all")}
    shots = sa.load_shots()
    assert 3 <= len(shots) <= 5
    assert not questions & {sa.normalise(s["question"]) for s in shots}


def test_the_set_ships_in_the_package():
    """pyproject.toml's package-data carries the JSON into a wheel: it is read through importlib.resources."""
    doc = json.loads(resources.files("ftlib").joinpath("evalsets/short_answers.json").read_text("utf-8"))
    assert doc["items"] == sa.load_short_answers("all")


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize("text, expected", [
    ("The Capital!", "capital"), ("  Paris,   France. ", "paris france"), ("an apple", "apple"),
    ("a", "a"), ("Danke schön!", "danke schön"), ("2, 5, 9", "2 5 9"), ("it's", "it s"), ("", ""),
])
def test_normalise(text, expected):
    assert sa.normalise(text) == expected


@pytest.mark.parametrize("reply, answers, right", [
    ("The capital of France is Paris.", ["Paris"], True),
    ("paris", ["Paris"], True),
    ("Paris is not the capital of France.", ["Paris"], True),  # documented: the rule reads no meaning
    ("London", ["Paris"], False),
    ("12", ["12", "twelve"], True),
    ("7 + 5 = 12.", ["12", "twelve"], True),
    ("Twelve", ["12", "twelve"], True),
    ("112", ["12", "twelve"], False),
    ("1 2", ["12", "twelve"], False),
    ("I don't know.\n12", ["12"], False),  # only the first line counts
    ("\n\n  12\nmore", ["12"], True),  # leading blank lines are skipped
    ("The answer is B.", ["b"], True),
    ("banana", ["b"], False),
    ("Chats are nice", ["chat"], False),  # whole words: "chats" is not "chat"
    ("In German: danke schön", ["danke schön"], True),
    ("2, 5, 9", ["2, 5, 9"], True),
    ("9, 2, 5", ["2, 5, 9"], False),
    ("", ["12"], False),
])
def test_is_right(reply, answers, right):
    assert sa.is_right(reply, answers) is right


def test_repeats_ngram():
    assert sa.repeats_ngram([1, 2, 3] * 4)
    assert not sa.repeats_ngram([1, 2, 3] * 3 + [1, 2])  # three times and a bit
    assert sa.repeats_ngram("the the the the the the".split())  # overlapping runs count
    assert not sa.repeats_ngram([1, 2])
    assert sa.repeats_ngram([7, 7], n=1, times=2) and not sa.repeats_ngram([7, 8], n=1, times=2)


# ---------------------------------------------------------------- scores
def _items(*answers):
    return [{"id": f"x-{i}", "category": "c" if i % 2 else "d", "question": "?", "answers": list(a), "split": "dev"}
            for i, a in enumerate(answers)]


def test_score_replies_agrees_with_ftlib_evaluate():
    replies = [Generation("Paris", [10, 2], "eos"), Generation("no no no", [5, 6, 7] * 4, "length"),
               Generation("12", [8, 9, 11], "stop_string"), Generation("twelve", [4], "eos")]
    items = _items(["Paris"], ["Rome"], ["12"], ["13"])
    scores = sa.score_replies(replies, items)
    report = ev.GenerationReport(["?"] * 4, replies, 12)
    assert scores["right"] == 2 and scores["n"] == 4 and scores["right_ids"] == ["x-0", "x-2"]
    assert scores["stop_rate"] == report.stop_rate == 0.75
    assert scores["median_length"] == report.summary()["median_length"]
    assert scores["repetition_rate"] == 0.25
    assert scores["by_category"] == {"d": [2, 2], "c": [0, 2]}
    with pytest.raises(ValueError, match="one reply per item"):
        sa.score_replies(replies[:3], items)


def test_reference_tally():
    labels, counts = sa.reference_tally(
        ["Blue.", "It is the colour red, I think", "Here is a poem about spring:\nThe sun...", "blue\nGreen"],
        ["Green", "The colour red.", "Spring arrives with blossoms and birdsong in every garden.", "green"])
    assert labels == ["wrong", "right", "can't tell", "wrong"]
    assert counts == {"right": 1, "wrong": 2, "can't tell": 1}
    with pytest.raises(ValueError, match="one reply per reference"):
        sa.reference_tally(["a"], [])


def test_few_shot_prompt():
    shots = [{"question": "What is 1 + 1?", "answer": "2"}]
    assert sa.few_shot_prompt("Q?", shots) == "Question: What is 1 + 1?\nAnswer: 2\n\nQuestion: Q?\nAnswer:"
    assert sa.few_shot_prompt("Q?").count("Question:") == len(sa.load_shots()) + 1


# ---------------------------------------------------------------- a forced model, end to end
def _force(model, token_id):
    """Make greedy decoding always pick ``token_id``: a large logit added after the LM head."""
    bias = torch.zeros(model.config.vocab_size)
    bias[token_id] = 1e4
    return model.lm_head.register_forward_hook(lambda module, inputs, output: output + bias)


def test_model_that_emits_eos_at_once(tokenizer, tiny_model):
    _force(tiny_model, tokenizer.eos_token_id)
    items = sa.load_short_answers("dev")
    replies, scores = sa.run_short_answers(tiny_model, tokenizer, items, "chat", max_new_tokens=5)
    assert scores["stop_rate"] == 1.0 and scores["median_length"] == 0.0 and scores["right"] == 0
    assert all(r.text == "" for r in replies) and scores["n"] == len(items) and scores["seconds"] > 0


@pytest.mark.parametrize("mode", sa.MODES)
def test_model_that_says_paris_forever(tokenizer, tiny_model, mode):
    paris = tokenizer(" Paris", add_special_tokens=False).input_ids
    assert len(paris) == 1
    _force(tiny_model, paris[0])
    items = sa.load_short_answers("all")
    replies, scores = sa.run_short_answers(tiny_model, tokenizer, items, mode, max_new_tokens=6)
    assert replies[0].text.split() == ["Paris"] * 6
    assert scores["right_ids"] == [i["id"] for i in items if "Paris" in i["answers"]]
    assert scores["stop_rate"] == 0.0 and scores["median_length"] == 6 and scores["repetition_rate"] == 1.0


def test_few_shot_mode_stops_at_a_newline(tokenizer, tiny_model):
    _force(tiny_model, tokenizer("\n", add_special_tokens=False).input_ids[0])
    replies, scores = sa.run_short_answers(tiny_model, tokenizer, sa.load_short_answers("dev")[:3], "few-shot")
    assert scores["stop_rate"] == 1.0 and [r.finish_reason for r in replies] == ["stop_string"] * 3


def test_chat_mode_needs_a_template(tokenizer, tiny_model):
    bare = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        sa.run_short_answers(tiny_model, bare, sa.load_short_answers("dev")[:1], "chat")
    with pytest.raises(ValueError, match="unknown mode"):
        sa.run_short_answers(tiny_model, tokenizer, sa.load_short_answers("dev")[:1], "zero-shot")


# ---------------------------------------------------------------- the command line
def test_cli_bad_model_is_one_line_and_exit_2(capsys, tmp_path):
    assert sa.main(["--model", str(tmp_path / "nowhere")]) == 2
    assert sa.main(["--model", str(tmp_path)]) == 2  # a folder, but not a model
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.startswith("error: ") and "Traceback" not in err


def test_cli_prints_the_table_row(capsys):
    assert sa.main(["--model", "tiny-base", "--mode", "chat", "--split", "test", "--max-new-tokens", "2"]) == 0
    row = capsys.readouterr().out
    assert row.startswith("tiny-base") and "chat" in row and "/30" in row and "stop" in row


# ---------------------------------------------------------------- no question in any training source
def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.slow
def test_no_question_is_in_any_training_source():
    from ftlib import data

    sources = {"alpaca": data.load_instructions("offline"), "chats": data.load_chats("offline"),
               "identity": data.load_identity("Ada", "the ftlib course", "offline"),
               "dpo": data.load_preferences("offline")}
    questions = [sa.normalise(i["question"]) for i in sa.load_short_answers("all")]
    questions += [sa.normalise(s["question"]) for s in sa.load_shots()]
    for name, ds in sources.items():
        assert len(ds) > 50, name
        text = " | ".join(sa.normalise(" ".join(_strings(record))) for record in ds)
        found = [q for q in questions if f" {q} " in f" {text} "]
        assert not found, f"{name} holds {found}"


@pytest.mark.slow
def test_base_model_knows_capitals_few_shot_but_does_not_answer_in_chat(base):
    """The measured contrast of issue 22 on a few questions: few-shot shows the knowledge, the untrained chat
    format does not (it never stops, and repeats the question instead of answering)."""
    from ftlib.templates import ARTICLE_CHAT_TEMPLATE

    model, tokenizer = base
    items = [i for i in sa.load_short_answers("dev") if i["category"] == "facts"]
    _, few_shot = sa.run_short_answers(model, tokenizer, items, "few-shot")
    assert {"facts-01", "facts-03"} <= set(few_shot["right_ids"]) and few_shot["stop_rate"] == 1.0
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)  # the fixture's tokenizer stays bare
    tokenizer.chat_template = ARTICLE_CHAT_TEMPLATE
    _, chat = sa.run_short_answers(model, tokenizer, items, "chat")
    assert chat["right"] < few_shot["right"] and chat["stop_rate"] == 0.0
