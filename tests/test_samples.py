"""Tokenisation with labels: exact labels, EOS kept, assistant-only masks, bad input, over-length policy."""
import copy
import re

import datasets
import pytest
import torch

from ftlib.batching import PaddingCollator
from ftlib.course.article import FineTuningDataset
from ftlib.samples import IGNORE_INDEX, SampleError, tokenise_chat, tokenise_dataset, tokenise_instruction
from ftlib.templates import ARTICLE_CHAT_TEMPLATE, format_alpaca

datasets.disable_progress_bars()

RECORD = {"instruction": "Name a primary colour.", "input": "", "output": "Blue."}
CHAT = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Say bye."}, {"role": "assistant", "content": "Bye!"}]

# SmolLM2's own template with {% generation %} tags added: transformers' reference assistant mask.
TAGGED_CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def trained_spans(labels):
    """Runs of consecutive trained labels."""
    spans, current = [], []
    for t in labels:
        if t != IGNORE_INDEX:
            current.append(t)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


# ---------------------------------------------------------------- Alpaca
def test_alpaca_labels_exact(tokenizer):
    prompt, response = format_alpaca(RECORD)
    p = tokenizer(prompt).input_ids
    r = tokenizer(response, add_special_tokens=False).input_ids
    sample = tokenise_instruction(RECORD, tokenizer)
    assert sample["input_ids"] == p + r + [tokenizer.eos_token_id]
    assert sample["labels"] == [IGNORE_INDEX] * len(p) + r + [tokenizer.eos_token_id]
    assert sample["attention_mask"] == [1] * len(sample["input_ids"])
    # hand-checked tail: "Blue" "." then <|im_end|>, the EOS, trained on
    assert [tokenizer.decode([t]) for t in sample["labels"][-3:]] == ["Blue", ".", "<|im_end|>"]


def test_train_on_prompt_trains_everything(tokenizer):
    sample = tokenise_instruction(RECORD, tokenizer, train_on_prompt=True)
    assert sample["labels"] == sample["input_ids"]


def test_article_style_changes_only_the_prompt(tokenizer):
    plain = tokenise_instruction(RECORD, tokenizer)
    article = tokenise_instruction(RECORD, tokenizer, style="article")
    assert tokenizer.decode(article["input_ids"]).count("### Input:") == 1
    assert trained_spans(plain["labels"]) == trained_spans(article["labels"])


def test_batched_dataset_equals_per_record(tokenizer):
    rows = [RECORD, {"instruction": "Find the verb.", "input": "John walks.", "output": "walks"}] * 3
    out, report = tokenise_dataset(datasets.Dataset.from_list(rows), tokenizer, batch_size=4)
    assert report.kept == 6 and not report.dropped
    assert out.column_names == ["input_ids", "attention_mask", "labels", "length"]
    for row, record in zip(out, rows):
        sample = tokenise_instruction(record, tokenizer)
        assert {k: row[k] for k in sample} == sample


def test_pad_equals_eos_bug_reproduced_and_fixed(tokenizer):
    """The article pads with pad == eos and ignores the pad id in the loss: the EOS target vanishes."""
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2, like the article's set-up
    ds = datasets.Dataset.from_list([RECORD])
    x, y = FineTuningDataset(ds, tokenizer, seq_length=64)[0]
    real = len(tokenizer(format_alpaca(RECORD, "article")[0] + RECORD["output"], add_special_tokens=False).input_ids)
    assert y[real].item() == tokenizer.eos_token_id  # the sample's EOS target is there ...
    article_targets = torch.where(y == tokenizer.pad_token_id, IGNORE_INDEX, y)  # CrossEntropyLoss(ignore_index=pad)
    assert article_targets[real].item() == IGNORE_INDEX  # ... and ignored: the model never learns to stop
    assert (article_targets == tokenizer.eos_token_id).sum() == 0

    sample = tokenise_instruction(RECORD, tokenizer)
    batch = PaddingCollator(tokenizer.pad_token_id, pad_to=64)([sample])
    n = len(sample["input_ids"])
    assert batch["labels"][0, n - 1].item() == tokenizer.eos_token_id  # fixed: EOS trained on
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()  # padding (same id!) masked by position
    assert (batch["input_ids"][0, n:] == tokenizer.eos_token_id).all()


# ---------------------------------------------------------------- chats
def test_chat_mask_matches_transformers_assistant_mask(tokenizer):
    ref = tokenizer.apply_chat_template(CHAT, chat_template=TAGGED_CHATML, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    # the tagged copy renders exactly like the tokenizer's own template ...
    assert tokenizer.apply_chat_template(CHAT, chat_template=TAGGED_CHATML, tokenize=False) == \
        tokenizer.apply_chat_template(CHAT, tokenize=False)
    for template in (None, TAGGED_CHATML):  # ... and our spans (found without the tags) agree with its mask
        sample = tokenise_chat(CHAT, tokenizer, chat_template=template)
        assert sample["input_ids"] == list(ref["input_ids"])
        assert [int(t != IGNORE_INDEX) for t in sample["labels"]] == list(ref["assistant_masks"])


@pytest.mark.parametrize("template, tail", [(None, "<|im_end|>"), (ARTICLE_CHAT_TEMPLATE, "\n<|im_end|>")])
def test_chat_spans_are_assistant_contents_plus_end_token(tokenizer, template, tail):
    sample = tokenise_chat(CHAT, tokenizer, chat_template=template)
    spans = [tokenizer.decode(s) for s in trained_spans(sample["labels"])]
    assert spans == [m["content"] + tail for m in CHAT if m["role"] == "assistant"]
    masked = tokenizer.decode([t for t, lab in zip(sample["input_ids"], sample["labels"]) if lab == IGNORE_INDEX])
    assert "Hi there" in masked and "Say bye." in masked and "Bye!" not in masked


def test_chat_with_system_turn_and_train_on_prompt(tokenizer):
    chat = [{"role": "system", "content": "Be brief."}] + CHAT
    sample = tokenise_chat(chat, tokenizer)
    assert "Be brief." in tokenizer.decode(sample["input_ids"])
    assert len(trained_spans(sample["labels"])) == 2
    assert tokenise_chat(chat, tokenizer, train_on_prompt=True)["labels"] == sample["input_ids"]


def test_chat_dataset_batched(tokenizer):
    ds = datasets.Dataset.from_list([{"messages": CHAT}, {"messages": CHAT[:2]}])
    out, report = tokenise_dataset(ds, tokenizer, chat_template=ARTICLE_CHAT_TEMPLATE, batch_size=1)
    assert report.kept == 2
    assert out[0]["labels"] == tokenise_chat(CHAT, tokenizer, chat_template=ARTICLE_CHAT_TEMPLATE)["labels"]
    assert len(trained_spans(out[1]["labels"])) == 1


def test_tokenizer_without_template_needs_one(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="ARTICLE_CHAT_TEMPLATE"):
        tokenise_chat(CHAT, bare)
    assert tokenise_chat(CHAT, bare, chat_template=ARTICLE_CHAT_TEMPLATE)["labels"][-1] == bare.eos_token_id


# ---------------------------------------------------------------- bad input
BAD_RECORDS = [
    ({"input": "", "output": "x"}, "'instruction'", "missing"),
    ({"instruction": None, "input": "", "output": "x"}, "'instruction'", "None"),
    ({"instruction": "do", "input": "", "output": None}, "'output'", "None"),
    ({"instruction": 3, "input": "", "output": "x"}, "'instruction'", "string"),
    ({"instruction": "do", "input": ["a"], "output": "x"}, "'input'", "string"),
    ({"instruction": "  ", "input": "", "output": "x"}, "'instruction'", "empty"),
    ({"instruction": "do", "input": "", "output": ""}, "'output'", "empty"),
    ("not a dict", "'instruction'", "dict"),
]


@pytest.mark.parametrize("record, field, problem", BAD_RECORDS)
def test_bad_alpaca_record_names_index_and_field(tokenizer, record, field, problem):
    with pytest.raises(SampleError, match=rf"record 7, field {field}: .*{problem}"):
        tokenise_instruction(record, tokenizer, index=7)


U, A = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
BAD_CHATS = [
    ([], "messages", "non-empty"),
    ("hello", "messages", "non-empty"),
    ([U, {"role": "bot", "content": "a"}], "messages[1].role", "unknown role"),
    ([U, U, A], "messages[1].role", "two 'user' turns in a row"),
    ([U, A, A], "messages[2].role", "two 'assistant' turns in a row"),
    ([A, U, A], "messages[0].role", "expected a 'user'"),
    ([U, A, U], "messages[2].role", "ends on a user turn"),
    ([U, {"role": "assistant", "content": None}], "messages[1].content", "None"),
    ([U, {"role": "assistant", "content": ""}], "messages[1].content", "empty"),
    ([U, {"role": "assistant"}], "messages[1].content", "missing"),
    ([U, A, {"role": "system", "content": "s"}, U, A], "messages[2].role", "system"),
    ([U, "a"], "messages[1]", "dict"),
]


@pytest.mark.parametrize("messages, field, problem", BAD_CHATS)
def test_bad_chat_names_index_and_field(tokenizer, messages, field, problem):
    with pytest.raises(SampleError, match=rf"record 2, field '{re.escape(field)}': .*{problem}"):
        tokenise_chat(messages, tokenizer, index=2)


def test_dataset_raises_or_skips_with_report(tokenizer):
    rows = [RECORD, {"instruction": "", "input": "", "output": "x"}, RECORD, {"instruction": "y", "input": "",
                                                                              "output": None}]
    ds = datasets.Dataset.from_list(rows)
    with pytest.raises(ValueError, match="record 1, field 'instruction'"):
        tokenise_dataset(ds, tokenizer)
    out, report = tokenise_dataset(ds, tokenizer, on_error="skip", batch_size=3)
    assert len(out) == 2 and report.kept == 2 and sorted(report.dropped) == [1, 3]
    assert "field 'output'" in report.dropped[3]
    assert "2/4 records kept, 2 dropped" in str(report)


def test_bad_chats_skipped_in_dataset(tokenizer):
    ds = datasets.Dataset.from_list([{"messages": CHAT}, {"messages": [U, U, A]}, {"messages": [U, A, U]}])
    out, report = tokenise_dataset(ds, tokenizer, on_error="skip")
    assert len(out) == 1 and sorted(report.dropped) == [1, 2]


# ---------------------------------------------------------------- over-length policy
LONG = {"instruction": "Summarise. " + "word " * 80, "input": "", "output": "Short answer."}


def test_overlong_error_drop_truncate(tokenizer):
    full = tokenise_instruction(LONG, tokenizer)
    limit = len(full["input_ids"]) - 20
    with pytest.raises(SampleError, match=rf"record 5, field 'input_ids': .*longer than max_length={limit}"):
        tokenise_instruction(LONG, tokenizer, max_length=limit, index=5)
    assert tokenise_instruction(LONG, tokenizer, max_length=limit, overlong="drop") is None
    cut = tokenise_instruction(LONG, tokenizer, max_length=limit, overlong="truncate")
    assert len(cut["input_ids"]) == limit
    assert trained_spans(cut["labels"]) == trained_spans(full["labels"])  # whole response, EOS included
    assert cut["input_ids"][-25:] == full["input_ids"][-25:]  # the prompt was cut from the left


def test_truncation_never_cuts_the_response(tokenizer):
    sample = tokenise_instruction(RECORD, tokenizer)
    response_len = len(trained_spans(sample["labels"])[0])
    with pytest.raises(SampleError, match="response alone"):
        tokenise_instruction(RECORD, tokenizer, max_length=response_len - 1, overlong="truncate")
    assert tokenise_instruction(RECORD, tokenizer, max_length=response_len, overlong="truncate")["labels"] == \
        trained_spans(sample["labels"])[0]


def test_dataset_overlong_report(tokenizer):
    ds = datasets.Dataset.from_list([RECORD, LONG, RECORD])
    limit = len(tokenise_instruction(LONG, tokenizer)["input_ids"]) - 10
    out, report = tokenise_dataset(ds, tokenizer, max_length=limit, overlong="drop")
    assert len(out) == 2 and list(report.dropped) == [1]
    out, report = tokenise_dataset(ds, tokenizer, max_length=limit, overlong="truncate")
    assert len(out) == 3 and report.truncated == {1: 10} and max(out["length"]) == limit
    with pytest.raises(ValueError, match="record 1"):
        tokenise_dataset(ds, tokenizer, max_length=limit)
    out, report = tokenise_dataset(ds, tokenizer, max_length=limit, on_error="skip")
    assert list(report.dropped) == [1]


def test_chat_truncation_masks_a_partly_cut_turn(tokenizer):
    chat = [{"role": "user", "content": "one " * 30}, {"role": "assistant", "content": "two " * 30}] + CHAT
    full = tokenise_chat(chat, tokenizer)
    first_trained = next(i for i, t in enumerate(full["labels"]) if t != IGNORE_INDEX)
    limit = len(full["input_ids"]) - (first_trained + 5)  # cuts 5 tokens into the first assistant turn
    cut = tokenise_chat(chat, tokenizer, max_length=limit, overlong="truncate")
    assert len(cut["input_ids"]) == limit
    spans = [tokenizer.decode(s) for s in trained_spans(cut["labels"])]
    assert spans == ["Hello! How can I help?<|im_end|>", "Bye!<|im_end|>"]  # the cut turn is not trained on


def test_tokens_html_colours_by_label(tokenizer):
    from ftlib.course.show import MASKED, TRAINED, tokens_html

    sample = tokenise_instruction(RECORD, tokenizer)
    page = tokens_html(tokenizer, sample["input_ids"], sample["labels"])
    n_trained = sum(t != IGNORE_INDEX for t in sample["labels"])
    assert page.count(f"background:{TRAINED};border") == n_trained == 3
    assert page.count(f"background:{MASKED};border") == len(sample["labels"]) - n_trained
    assert "&lt;|im_end|&gt;" in page  # special tokens escaped, not swallowed as HTML


def test_show_tokens_carries_the_same_html_and_a_text_fallback_that_marks_the_trained_spans(tokenizer, monkeypatch):
    import IPython.display
    from IPython.core.formatters import DisplayFormatter

    from ftlib.course.show import TokenView, show_tokens, tokens_html, tokens_text

    sample = tokenise_instruction(RECORD, tokenizer)
    ids, labels = sample["input_ids"], sample["labels"]
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show_tokens(tokenizer, ids, labels, "a sample")
    bundle, _ = DisplayFormatter().format(shown[0])
    assert bundle["text/html"] == tokens_html(tokenizer, ids, labels, "a sample")  # the HTML as before
    text = bundle["text/plain"]
    assert text == tokens_text(tokenizer, ids, labels, "a sample") and isinstance(shown[0], TokenView)
    # the marked spans are exactly the trained spans (the peer: trained_spans), the rest is the prompt
    marked = re.findall(r"\[\[(.*?)\]\]", text.split("\n", 2)[2], flags=re.S)
    assert marked == [tokenizer.decode(s).replace("\n", "↵\n") for s in trained_spans(labels)]
    assert re.sub(r"\[\[|\]\]", "", text.split("\n", 2)[2]) == tokenizer.decode(ids).replace("\n", "↵\n")


class _CountsPickling:
    """Counts its picklings (datasets pickles a map's function, and what it closes over, to name the result)."""
    pickled = 0

    def __reduce__(self):
        _CountsPickling.pickled += 1
        return (_CountsPickling, ())


def test_tokenising_a_dataset_never_pickles_the_tokenizer(tokenizer):
    """Naming the result by hashing a closure over the tokenizer pickled all of it: 14 of 14.6 s for Gemma-3's
    tokenizer on notebook 05's 412 chats. The name comes from what decides the result instead; the samples are the
    same, and a changed tokenizer (here its template) still gives another name."""
    tok = copy.deepcopy(tokenizer)
    tok.counter, _CountsPickling.pickled = _CountsPickling(), 0  # pickled along with the tokenizer, if it ever is
    chats = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": f"Say {i}."},
                                                      {"role": "assistant", "content": f"{i}."}]} for i in range(5)])
    out, _ = tokenise_dataset(chats, tok, chat_template=ARTICLE_CHAT_TEMPLATE)
    assert _CountsPickling.pickled == 0
    assert out["input_ids"] == [tokenise_chat(c, tok, ARTICLE_CHAT_TEMPLATE)["input_ids"] for c in chats["messages"]]
    other = copy.deepcopy(tok)
    tok.chat_template = ARTICLE_CHAT_TEMPLATE
    other.chat_template = "{{ '# ' }}" + ARTICLE_CHAT_TEMPLATE  # every chat starts with '# '
    assert tokenise_dataset(chats, tok)[0]._fingerprint == tokenise_dataset(chats, tok)[0]._fingerprint
    assert tokenise_dataset(chats, tok)[0]._fingerprint != tokenise_dataset(chats, other)[0]._fingerprint
