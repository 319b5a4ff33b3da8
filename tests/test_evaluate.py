"""ftlib.evaluate: stop rate and lengths on crafted replies and against HF generate, loss/perplexity, the bug."""
import math

import pytest
import torch

from ftlib import evaluate as ev
from ftlib.batching import make_dataloader
from ftlib.course.article import drop_pad_labels
from ftlib.generation import Generation
from ftlib.samples import IGNORE_INDEX, tokenise_instruction

EOS = 2


def test_stop_rate_on_crafted_token_ids():
    replies = [
        [5, 6, EOS],            # stopped after 2 tokens
        [5, 6, 7, 8],           # hit the limit (4 new tokens)
        [EOS, EOS, EOS, EOS],   # stopped at once; the rest is HF generate's padding (pad == eos)
        [5, EOS, EOS, EOS],     # stopped after 1 token, then padding
        [5, 6, 7, EOS],         # the end token as the very last allowed token still counts as a stop
    ]
    assert ev.stop_rate(replies, stop_ids={EOS}) == pytest.approx(4 / 5)
    assert ev.reply_lengths(replies, stop_ids={EOS}) == [2, 4, 0, 1, 3]
    assert ev.stop_rate(replies, stop_ids={EOS, 8}) == 1.0  # several end tokens (e.g. <|im_end|> and <eos>)
    assert ev.stop_rate(replies, stop_ids={99}) == 0.0


def test_stop_rate_on_generations():
    replies = [Generation("a", [5, EOS], "eos"), Generation("b c", [5, 6, 7], "length"),
               Generation("d", [5, 9], "stop_string")]
    assert ev.stop_rate(replies) == pytest.approx(2 / 3)
    assert ev.reply_lengths(replies) == [1, 3, 2]  # the end token is not part of the reply


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="empty"):
        ev.stop_rate([])
    with pytest.raises(ValueError, match="stop_ids"):
        ev.stop_rate([[1, 2, 3]])


def test_generate_replies_agrees_with_hf_generate(tokenizer, tiny_model):
    """Stop flags and lengths from ftlib's greedy replies equal those read off HF ``generate`` output rows."""
    prompts = ["Hello there", "The capital of France is", "1, 2, 3,"]
    limit = 12
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    free = tiny_model.generate(**enc, max_new_tokens=limit, do_sample=False, eos_token_id=None,
                               pad_token_id=tokenizer.pad_token_id)[:, enc.input_ids.shape[1]:]
    stop = int(free[0, 4])  # a token the first reply really produces: call it the end token
    hf = tiny_model.generate(**enc, max_new_tokens=limit, do_sample=False, eos_token_id=stop,
                             pad_token_id=stop)[:, enc.input_ids.shape[1]:]
    report = ev.generate_replies(tiny_model, tokenizer, prompts, max_new_tokens=limit, batch_size=2,
                                 stop_token_ids={stop})
    rows = [row.tolist() for row in hf]
    assert report.stop_rate == ev.stop_rate(rows, stop_ids={stop})
    assert report.lengths == ev.reply_lengths(rows, stop_ids={stop})
    assert report.replies[0].finish_reason == "eos" and report.lengths[0] <= 4
    summary = report.summary()
    assert summary["stop_rate"] + summary["at_limit"] == pytest.approx(1.0)
    part = report.select([2, 0])  # a subset report: its prompts, replies and rates, in the order asked
    assert part.prompts == [prompts[2], prompts[0]] and part.replies == [report.replies[2], report.replies[0]]
    assert part.stop_rate == ev.stop_rate([rows[2], rows[0]], stop_ids={stop})


def test_response_loss_is_hf_loss_and_perplexity_its_exp(tokenizer, tiny_model):
    records = [{"instruction": "Say hi.", "input": "", "output": "Hi!"},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5, so the answer is 5."}]
    samples = [tokenise_instruction(r, tokenizer) for r in records]
    columns = {"input_ids": [s["input_ids"] for s in samples], "labels": [s["labels"] for s in samples]}
    loader = make_dataloader(columns, "dynamic", batch_size=2, shuffle=False, pad_token_id=tokenizer.pad_token_id)
    batch = next(iter(loader))
    with torch.no_grad():
        hf_loss = tiny_model(**batch).loss.item()  # HF's mean over the non-ignored (response) tokens
    result = ev.response_loss(tiny_model, loader)
    assert result["loss"] == pytest.approx(hf_loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(hf_loss), rel=1e-5)
    assert ev.perplexity(0.0) == 1.0 and ev.perplexity(1e6) == math.inf
    split = ev.response_loss(tiny_model, loader, end_token_ids={tokenizer.eos_token_id})
    assert split["loss"] == pytest.approx(hf_loss, rel=1e-5) and split["end_tokens"] == 2
    content = sum(len([x for x in s["labels"] if x != IGNORE_INDEX]) - 1 for s in samples)
    # the overall mean is the token-weighted mean of its two parts
    assert split["loss"] == pytest.approx((split["content_loss"] * content + split["end_loss"] * 2) / (content + 2),
                                          rel=1e-5)
    with torch.no_grad():  # the end loss by hand: -log p(EOS) at the last position of each sample
        by_hand = [-tiny_model(torch.tensor([s["input_ids"]])).logits[0, -2].log_softmax(-1)[s["input_ids"][-1]]
                   for s in samples]
    assert split["end_loss"] == pytest.approx(float(sum(by_hand) / 2), rel=1e-4)


def test_drop_pad_labels_removes_exactly_the_eos_label(tokenizer):
    """With pad == eos (SmolLM2), the article's ignore_index=pad drops the EOS target and nothing else."""
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    sample = tokenise_instruction({"instruction": "Say hi.", "input": "", "output": "Hi!"}, tokenizer)
    buggy = drop_pad_labels(sample["labels"], sample["input_ids"], tokenizer.pad_token_id)
    changed = [i for i, (a, b) in enumerate(zip(sample["labels"], buggy)) if a != b]
    assert changed == [len(sample["input_ids"]) - 1]  # the last position: the EOS
    assert sample["labels"][-1] == tokenizer.eos_token_id and buggy[-1] == IGNORE_INDEX
    # with a distinct pad id (Gemma's <pad>) nothing changes: the bug needs pad == eos
    assert drop_pad_labels(sample["labels"], sample["input_ids"], pad_token_id=10**6) == sample["labels"]


def test_probe_table_shows_how_each_reply_ended():
    reports = {name: ev.GenerationReport(["p1"], [Generation(text, [1], reason)], 8)
               for name, text, reason in [("before", "line one\nline two", "length"), ("after", "short", "eos")]}
    table = ev.probe_table(reports).splitlines()
    assert table[0] == "### probe 1"
    assert "[limit]" in table[1] and "line one⏎line two" in table[1]
    assert "[stop]" in table[2] and table[2].endswith("short")


def _naive_repeats(words, n, times):
    """The peer: count every n-gram by scanning the whole list for each start position."""
    return any(sum(words[j:j + n] == words[i:i + n] for j in range(len(words) - n + 1)) >= times
               for i in range(len(words) - n + 1))


@pytest.mark.parametrize("text, expected", [
    ("1. 1.1.1.1.1.1.1.1", True),  # the degenerate list of notebook 05: "1 . 1" over and over
    ("Roses are red.\nRoses are red.\nRoses are red.\nRoses are red.", True),  # one line four times
    ("Roses are red.\nRoses are red.\nRoses are red.", False),  # three times is not four
    ("1. Cat\n2. Dog\n3. Bird\n4. Fish\n5. Horse", False),  # a list of different items
    ("The capital of Japan is Tokyo.", False),
    ("", False),
])
def test_repeats_ngram_finds_a_loop_not_a_list(text, expected):
    assert ev.repeats_ngram(text) is expected
    words = ev._WORD.findall(text.lower())
    assert ev.repeats_ngram(text) == _naive_repeats(words, 3, 4)


def test_repeats_ngram_agrees_with_a_naive_count_on_random_texts():
    import random

    rng = random.Random(0)
    for _ in range(200):
        words = [rng.choice("a b c .".split()) for _ in range(rng.randint(0, 16))]
        n, times = rng.randint(1, 3), rng.randint(2, 4)
        assert ev.repeats_ngram(" ".join(words), n, times) == _naive_repeats(words, n, times)
    with pytest.raises(ValueError, match="times"):
        ev.repeats_ngram("a b c", times=1)


def test_repetition_rate_is_the_share_of_looping_replies():
    from ftlib.generation import Generation

    replies = [Generation("a b c a b c a b c a b c"), "a short answer", Generation("fine"), "x y z"]
    assert ev.repetition_rate(replies) == 0.25
    report = ev.GenerationReport(["p"] * 4, [Generation(r) if isinstance(r, str) else r for r in replies], 8)
    assert report.summary()["repetition_rate"] == 0.25
    with pytest.raises(ValueError, match="empty"):
        ev.repetition_rate([])
