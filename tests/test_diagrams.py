"""The course diagrams draw the real thing: each figure's image data equals the array it claims to show."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ftlib.batching import PackingCollator, PaddingCollator, block_causal_mask  # noqa: E402
from ftlib.course.diagrams import (  # noqa: E402
    CACHED,
    COMPUTED,
    EOS,
    FUTURE,
    PAD,
    PROMPT,
    RESPONSE,
    forward_token_counts,
    kv_cache_figure,
    label_classes,
    labels_figure,
    packed_segments,
    packing_figure,
    step_grid,
)
from ftlib.samples import tokenise_instruction  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_kv_cache_counts_are_measured_and_drawn(tiny_model, tokenizer):
    prompt, steps = "Once upon a time, there was", 6
    n_prompt = len(tokenizer(prompt).input_ids)
    counts = forward_token_counts(tiny_model, tokenizer, prompt, steps)
    article, cached = counts.values()
    assert article == [n_prompt + i for i in range(steps)]  # the whole sequence, every step
    assert cached == [n_prompt] + [1] * (steps - 1)  # prefill, then one token per step
    assert sum(cached) == n_prompt + steps - 1
    assert sum(article) == steps * n_prompt + steps * (steps - 1) // 2  # the triangular sum
    fig = kv_cache_figure(counts)
    for ax, fed in zip(fig.axes, counts.values()):
        drawn = torch.as_tensor(ax.images[0].get_array())
        assert torch.equal(drawn, step_grid(fed))
        assert f"{sum(fed)} token positions computed" in ax.get_title()
    no_cache, with_cache = (torch.as_tensor(ax.images[0].get_array()) for ax in fig.axes)
    assert (no_cache != CACHED).all() and (with_cache[1:, :n_prompt] == CACHED).all()
    assert ((with_cache == COMPUTED).sum(1) == torch.tensor(cached)).all()
    assert (with_cache[0, n_prompt:] == FUTURE).all()


def test_label_classes_follow_labels_and_positions(tokenizer):
    sample = tokenise_instruction({"instruction": "Name a primary colour.", "input": "", "output": "Blue."}, tokenizer)
    n = len(sample["input_ids"])
    batch = PaddingCollator(tokenizer.pad_token_id, pad_to=n + 3)([sample])
    fig = labels_figure(batch, tokenizer)
    drawn = fig.axes[0].images[0].get_array()[0].tolist()
    labels = batch["labels"][0].tolist()
    assert drawn == label_classes(batch["input_ids"][0].tolist(), labels, batch["attention_mask"][0].tolist(),
                                  tokenizer.eos_token_id)
    assert [c in (PROMPT, PAD) for c in drawn] == [label == -100 for label in labels]
    assert drawn[n:] == [PAD] * 3 and drawn[n - 1] == EOS and RESPONSE in drawn  # the EOS is trained
    # pad == eos for SmolLM2: the padding has the EOS id, and is still told apart (by position)
    assert batch["input_ids"][0, n:].tolist() == [tokenizer.eos_token_id] * 3
    assert fig.axes[0].get_xticklabels()[n - 1].get_text() == tokenizer.eos_token


def test_packing_figure_draws_the_collators_mask(tokenizer):
    records = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("yes", "no", "maybe")]
    samples = [tokenise_instruction(r, tokenizer) for r in records]
    lengths = [len(s["input_ids"]) for s in samples]
    batch = PackingCollator(tokenizer.pad_token_id, max_length=sum(lengths))([samples, samples[:1]])
    fig = packing_figure(batch, sum(lengths))
    strip, mask = fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
    assert torch.equal(torch.as_tensor(mask), (batch["attention_mask"][0, 0] == 0).long())  # the collator's mask
    expected = [k for k, n in enumerate(lengths) for _ in range(n)]
    assert packed_segments(batch["position_ids"][0].tolist(), sum(lengths)) == expected
    assert [row[0] for row in strip.tolist()] == [k + 1 for k in expected]
    assert torch.equal(torch.as_tensor(mask), (block_causal_mask(torch.tensor([expected]))[0, 0] == 0).long())
    assert not mask[lengths[0], 0] and mask[lengths[0], lengths[0]]  # sample 1 sees itself, not sample 0
    assert "3 samples" in fig.axes[1].get_title()
    padded = packing_figure(batch, lengths[0], row=1)  # row 1: one sample, then padding
    strip = [row[0] for row in padded.axes[0].images[0].get_array().tolist()]
    assert strip == [1] * lengths[0] + [0] * (sum(lengths) - lengths[0])


def test_lora_figure_draws_the_layers_own_shapes():
    from ftlib.course.diagrams import lora_figure, lora_shapes
    from ftlib.lora import add_lora
    from ftlib.tiny import tiny_llama

    peft_model = add_lora(tiny_llama(vocab_size=64, seed=0), r=4, alpha=8)
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    shapes = lora_shapes(layer)
    d_out, d_in = layer.base_layer.weight.shape
    assert shapes == {"W": (d_out, d_in), "A": (4, d_in), "B": (d_out, 4)}
    fig = lora_figure(layer)
    widths_heights = sorted((p.get_width(), p.get_height()) for p in fig.axes[0].patches)
    assert widths_heights == sorted([(d_in, d_out), (4, d_out), (d_in, 4)])
    title = fig.axes[0].get_title()
    assert f"trained {4 * (d_in + d_out):,} of" in title and "r = 4" in title
