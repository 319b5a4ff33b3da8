"""ftlib.generate against its peers: HF's greedy and sampled generate, and the article's no-cache loop."""
import pytest
import torch

from ftlib.course.article import article_generate
from ftlib.generation import encode_prompts, generate, stream_generate
from ftlib.tiny import tiny_llama_for

pytestmark = pytest.mark.slow  # the unit-slow job of `make test` (subprocesses, real models, minutes)

STORY = "Once upon a time, there was"


def hf_new_tokens(model, input_ids, attention_mask, eos, **kwargs):
    """HF generate's new tokens per row, cut after the first end-of-sequence token (HF pads after it)."""
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    rows = []
    for row in out[:, input_ids.shape[1]:].tolist():
        rows.append(row[:row.index(eos) + 1] if eos in row else row)
    return rows


def test_greedy_equals_hf_generate_on_the_instruct_model(instruct):
    model, tok = instruct
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    prompts = [STORY, chat]  # different lengths: the batch is left-padded
    ids, mask = encode_prompts(tok, prompts, model)
    assert mask[0, 0] == 0 and mask[1].all()
    expected = hf_new_tokens(model, ids, mask, tok.eos_token_id, max_new_tokens=24, do_sample=False)
    got = generate(model, tok, prompts, max_new_tokens=24, do_sample=False, return_details=True)
    assert [g.token_ids for g in got] == expected
    assert got[1].finish_reason == "eos" and "Paris" in got[1].text and "<|im_end|>" not in got[1].text
    single = generate(model, tok, STORY, max_new_tokens=24, do_sample=False, return_details=True)
    ids1 = tok(STORY, return_tensors="pt").input_ids
    assert [single.token_ids] == hf_new_tokens(model, ids1, None, tok.eos_token_id, max_new_tokens=24,
                                               do_sample=False)


def test_greedy_with_hf_repetition_penalty_equals_hf(instruct):
    model, tok = instruct
    ids = tok(STORY, return_tensors="pt").input_ids
    expected = hf_new_tokens(model, ids, None, tok.eos_token_id, max_new_tokens=20, do_sample=False,
                             repetition_penalty=1.5)
    got = generate(model, tok, STORY, max_new_tokens=20, do_sample=False, repetition_penalty=1.5, return_details=True)
    assert [got.token_ids] == expected


def test_sampling_draws_what_hf_draws_from_the_same_rng_state(instruct):
    model, tok = instruct
    ids = tok(STORY, return_tensors="pt").input_ids
    settings = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=16)
    torch.manual_seed(123)
    expected = hf_new_tokens(model, ids, None, tok.eos_token_id, **settings)
    torch.manual_seed(123)
    assert [generate(model, tok, STORY, return_details=True, **settings).token_ids] == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_equals_hf_generate_in_each_dtype(tokenizer, dtype):
    """benchmarks.generation times both dtypes: ftlib must decode what HF decodes in each (no cast, same steps)."""
    # weights 25x the usual init scale: at 0.02 a random tiny model repeats one token, a weak check
    model = tiny_llama_for(tokenizer, initializer_range=0.5).to(dtype)
    ids, mask = encode_prompts(tokenizer, [STORY, "Hello"], model)
    expected = hf_new_tokens(model, ids, mask, tokenizer.eos_token_id, max_new_tokens=16, min_new_tokens=16,
                             do_sample=False)
    got = generate(model, tokenizer, [STORY, "Hello"], max_new_tokens=16, do_sample=False, stop_token_ids=[],
                   return_details=True)
    assert [g.token_ids for g in got] == expected
    assert next(model.parameters()).dtype == dtype and len(set(expected[0])) > 4


def test_seeded_sampling_is_reproducible(tiny_model, tokenizer):
    kwargs = dict(max_new_tokens=12, temperature=1.2, top_k=0, stop_token_ids=[])
    first = generate(tiny_model, tokenizer, [STORY, "Hello"], seed=7, **kwargs)
    assert first == generate(tiny_model, tokenizer, [STORY, "Hello"], seed=7, **kwargs)
    assert first != generate(tiny_model, tokenizer, [STORY, "Hello"], seed=8, **kwargs)


def test_kv_cached_loop_draws_what_the_article_loop_draws(tiny_model, tokenizer):
    kwargs = dict(temperature=0.9, top_k=50, repetition_penalty=1.1, repetition_penalty_range=10, seed=3)
    article = article_generate(tiny_model, tokenizer, STORY, max_tokens=15, stop_token_ids=[], **kwargs)
    ours = generate(tiny_model, tokenizer, STORY, max_new_tokens=15, stop_token_ids=[], **kwargs)
    assert article == ours and len(tokenizer(ours).input_ids) >= 10


def test_article_window_penalty_changes_greedy_output_on_purpose(tiny_model, tokenizer):
    """A random model repeats itself; the article's compounding window and HF's penalty break loops differently."""
    plain = generate(tiny_model, tokenizer, STORY, max_new_tokens=30, do_sample=False, stop_token_ids=[])
    hf_style = generate(tiny_model, tokenizer, STORY, max_new_tokens=30, do_sample=False, stop_token_ids=[],
                        repetition_penalty=3.0, return_details=True)
    article = generate(tiny_model, tokenizer, STORY, max_new_tokens=30, do_sample=False, stop_token_ids=[],
                       repetition_penalty=3.0, repetition_penalty_range=4, return_details=True)
    assert len({plain, hf_style.text, article.text}) == 3
    prompt_ids = set(tokenizer(STORY).input_ids)
    # HF penalises the prompt's tokens too (greedy never picks them here)
    assert not prompt_ids & set(hf_style.token_ids)


def test_eos_ends_generation_and_is_stripped(tiny_model, tokenizer):
    free = generate(tiny_model, tokenizer, STORY, max_new_tokens=10, do_sample=False, stop_token_ids=[],
                    return_details=True)
    stop = free.token_ids[3]
    first = free.token_ids.index(stop)
    got = generate(tiny_model, tokenizer, STORY, max_new_tokens=10, do_sample=False, stop_token_ids=[stop],
                   return_details=True)
    assert got.token_ids == free.token_ids[:first + 1] and got.finish_reason == "eos" and not got.truncated
    assert got.text == tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)
    assert free.finish_reason == "length" and free.truncated


def test_stop_strings_end_generation_in_batch_and_stream(tiny_model, tokenizer):
    kwargs = dict(max_new_tokens=20, seed=0, stop_token_ids=[])
    full = generate(tiny_model, tokenizer, [STORY, "Hi"], **kwargs)[0]
    stop = full[len(full) // 2: len(full) // 2 + 4]
    assert stop.strip()
    got = generate(tiny_model, tokenizer, [STORY, "Hi"], stop_strings=[stop], return_details=True, **kwargs)
    assert got[0].text == full[:full.index(stop)] and got[0].finish_reason == "stop_string"
    assert got[1].finish_reason == "length"

    alone = generate(tiny_model, tokenizer, STORY, **kwargs)  # one row draws differently from a batch of two
    stop = alone[len(alone) // 2: len(alone) // 2 + 4]
    stream = stream_generate(tiny_model, tokenizer, STORY, stop_strings=stop, **kwargs)
    pieces = list(stream)
    assert "".join(pieces) == alone[:alone.index(stop)] == stream.text and stream.finish_reason == "stop_string"
    assert len(pieces) > 1 and not any(stop in p for p in pieces)


def test_stream_pieces_join_to_generate_text(tiny_model, tokenizer):
    kwargs = dict(max_new_tokens=25, seed=0, stop_token_ids=[])
    stream = stream_generate(tiny_model, tokenizer, STORY, **kwargs)
    pieces = list(stream)
    assert "".join(pieces) == generate(tiny_model, tokenizer, STORY, **kwargs) and len(pieces) > 5
    assert len(stream.token_ids) == 25 and stream.truncated


def test_generation_stops_at_the_context_length(tokenizer):
    model = tiny_llama_for(tokenizer, max_positions=16)
    out = generate(model, tokenizer, STORY, max_new_tokens=50, stop_token_ids=[], seed=0, return_details=True)
    assert len(tokenizer(STORY).input_ids) + len(out.token_ids) == 16 and out.truncated
    with pytest.raises(ValueError, match="context is 16 tokens"):
        generate(model, tokenizer, "word " * 20)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt_or_prompts=""), "empty"),
    (dict(prompt_or_prompts=["fine", "  "]), "#1 is empty"),
    (dict(prompt_or_prompts=[]), "No prompts"),
    (dict(temperature=0.0), "greedy"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.01), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(stop_strings=[""]), "stop_strings"),
])
def test_bad_input_raises_clear_errors(tiny_model, tokenizer, kwargs, message):
    kwargs = {"prompt_or_prompts": STORY, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, tokenizer, **kwargs)


def test_generation_benchmark_advises_bf16_only_when_it_was_faster_at_every_length():
    from benchmarks.generation import cpu_dtype_advice
    fast = [{"ftlib fp32": 17.0, "ftlib bf16": 24.0}, {"ftlib fp32": 17.5, "ftlib bf16": 24.5}]
    assert "set FTLIB_CPU_GENERATION_DTYPE=bf16" in cpu_dtype_advice(fast)
    mixed = [{"ftlib fp32": 17.0, "ftlib bf16": 24.0}, {"ftlib fp32": 17.0, "ftlib bf16": 17.5}]
    assert "keep the fp32 default" in cpu_dtype_advice(mixed)
