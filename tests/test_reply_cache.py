"""ftlib.reply_cache: a reply read back is the reply generating again gives; anything that changes the reply
(weights, prompt, settings) misses; a saved-and-reloaded model hits (notebook 08 reads what 05 generated)."""
import pytest
import torch

from ftlib import evaluate as ev
from ftlib import reply_cache
from ftlib.checkpoint import save_finetuned
from ftlib.models import load_model
from ftlib.reply_cache import ReplyCache, model_key
from ftlib.short_answers import load_short_answers, run_short_answers
from ftlib.tiny import tiny_llama_for

PROMPTS = ["Hello there", "The capital of France is", "1, 2, 3,"]


def _fields(report):
    return [(r.text, r.token_ids, r.finish_reason) for r in report.replies]


def test_a_second_ask_reads_the_first_reply_and_generates_nothing(tokenizer, tmp_path, monkeypatch):
    model = tiny_llama_for(tokenizer, seed=0)
    fresh = ev.generate_replies(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=2)
    cache = ReplyCache(tmp_path)
    first = ev.generate_replies(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=2, cache=cache)
    assert _fields(first) == _fields(fresh) and (cache.hits, cache.misses) == (0, 3)

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although every reply was cached")

    monkeypatch.setattr(ev, "generate", no_generation)
    again = ev.generate_replies(model, tokenizer, PROMPTS[::-1], max_new_tokens=10, batch_size=3, cache=cache)
    assert _fields(again) == _fields(fresh)[::-1] and (cache.hits, cache.misses) == (3, 3)


def test_only_the_missing_prompts_are_generated(tokenizer, tmp_path, monkeypatch):
    model = tiny_llama_for(tokenizer, seed=0)
    cache = ReplyCache(tmp_path)
    ev.generate_replies(model, tokenizer, PROMPTS[:2], max_new_tokens=8, cache=cache)
    asked = []
    real = ev.generate

    def counting(model, tokenizer, prompts, **kwargs):
        asked.extend(prompts)
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(ev, "generate", counting)
    report = ev.generate_replies(model, tokenizer, PROMPTS, max_new_tokens=8, cache=cache)
    assert asked == [PROMPTS[2]]
    monkeypatch.setattr(ev, "generate", real)
    assert _fields(report) == _fields(ev.generate_replies(model, tokenizer, PROMPTS, max_new_tokens=8))


@pytest.mark.parametrize("change", ["weights", "limit", "stops", "special", "code"])
def test_what_changes_a_reply_misses(tokenizer, tmp_path, monkeypatch, change):
    model = tiny_llama_for(tokenizer, seed=0)
    cache = ReplyCache(tmp_path)
    kwargs = dict(max_new_tokens=8, stop_token_ids=None, add_special_tokens=True)
    ev.generate_replies(model, tokenizer, PROMPTS, cache=cache, **kwargs)
    if change == "weights":
        with torch.no_grad():
            model.model.norm.weight[0] += 1e-3
    elif change == "code":  # another torch, transformers or ftlib.generation: the same weights may reply otherwise
        monkeypatch.setattr(reply_cache, "_code_key", lambda: ["another torch", "4.0", "edited"])
    else:
        kwargs.update({"limit": {"max_new_tokens": 9}, "stops": {"stop_token_ids": {5}},
                       "special": {"add_special_tokens": False}}[change])
    ev.generate_replies(model, tokenizer, PROMPTS, cache=cache, **kwargs)
    assert (cache.hits, cache.misses) == (0, 6)


def test_a_saved_and_reloaded_model_has_the_same_key(tokenizer, tmp_path):
    model = tiny_llama_for(tokenizer, seed=3)
    saved = save_finetuned(model, tokenizer, tmp_path / "final")
    reloaded, _ = load_model(str(saved), dtype=torch.float32)
    assert model_key(reloaded) == model_key(model)
    assert model_key(reloaded.to(torch.bfloat16)) != model_key(model)  # a cast model is another model
    assert model_key(tiny_llama_for(tokenizer, seed=4)) != model_key(model)


def test_an_unreadable_file_is_regenerated_and_rewritten(tokenizer, tmp_path):
    model = tiny_llama_for(tokenizer, seed=0)
    cache = ReplyCache(tmp_path)
    first = ev.generate_replies(model, tokenizer, PROMPTS, max_new_tokens=6, cache=cache)
    (path,) = tmp_path.glob("*.jsonl")
    path.write_text('{"key": "half a line', encoding="utf-8")
    again = ev.generate_replies(model, tokenizer, PROMPTS, max_new_tokens=6, cache=cache)
    assert _fields(again) == _fields(first) and cache.hits == 0
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_short_answers_read_the_cache_in_chat_mode_only(tokenizer, tmp_path):
    model = tiny_llama_for(tokenizer, seed=0)
    items = load_short_answers("dev")[:2]
    cache = ReplyCache(tmp_path)
    first = run_short_answers(model, tokenizer, items, max_new_tokens=6, cache=cache)
    second = run_short_answers(model, tokenizer, items, max_new_tokens=6, cache=cache)
    assert cache.hits == 2 and [r.text for r in second[0]] == [r.text for r in first[0]]
    assert {k: v for k, v in second[1].items() if k != "seconds"} == {k: v for k, v in first[1].items()
                                                                     if k != "seconds"}
    with pytest.raises(ValueError, match="chat-mode replies only"):
        run_short_answers(model, tokenizer, items, mode="few-shot", cache=cache)
