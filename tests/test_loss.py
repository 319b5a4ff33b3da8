"""ftlib.loss: logits only at trained positions give the same losses and gradients as Hugging Face's own loss and
as the full-logits path it replaced - Llama- and Gemma-3-shaped models, padding, packing, empty rows, LoRA, DPO."""
import pytest
import torch
import torch.nn.functional as F

from ftlib import loss
from ftlib.batching import PackingCollator, PaddingCollator
from ftlib.dpo import PreferenceCollator, reply_labels
from ftlib.lora import add_lora
from ftlib.loss import sequence_logps
from ftlib.testing import tiny_gemma3
from ftlib.tiny import tiny_llama
from ftlib.train import token_loss_sum

VOCAB, CAP = 256, 0.3  # the cap is small enough to bend a tiny random model's logits (checked below)


def make_model(kind: str, **kw):
    if kind == "llama":
        return tiny_llama(vocab_size=VOCAB, max_positions=64, **kw).train()
    return tiny_gemma3(vocab_size=VOCAB, max_positions=64, final_logit_softcapping=CAP, **kw).train()


def samples():
    g = torch.Generator().manual_seed(0)
    out = []
    for n, prompt in ((9, 3), (5, 2), (7, 7), (11, 4), (6, 1)):  # the third sample trains nothing
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def batch(layout: str) -> dict:
    s = samples()
    if layout == "padded":
        return PaddingCollator(pad_token_id=0)(s)
    if layout == "packed-mask":
        return PackingCollator(0, max_length=24)([s[:3], s[3:]])
    if layout == "packed-positions":
        return PackingCollator(0, max_length=24, attention="position_ids")([s[:3], s[3:]])
    b = PaddingCollator(pad_token_id=0)(s)  # "all-masked": nothing trained anywhere
    b["labels"][:] = -100
    return b


def old_token_loss_sum(model, batch):
    """ftlib.train.token_loss_sum before ftlib.loss: logits at every position, then cross-entropy."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100,
                            reduction="sum")
    return total, int((labels != -100).sum())


def old_sequence_logps(model, batch):
    """DPO's sequence log-probabilities before ftlib.loss: full logits at every position."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    targets = batch["input_ids"][:, 1:].masked_fill(batch["completion_mask"][:, 1:] == 0, -100)
    logits = logits[:, :-1].float()
    return -F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                            reduction="none").view(targets.shape).sum(dim=1)


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    value = compute()
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def mean_of(fn, model, b):
    total, count = fn(model, b)
    return total / max(count, 1)


def assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("layout", ["padded", "packed-mask", "packed-positions"])
def test_loss_and_gradients_equal_hf_and_the_full_logits_path(kind, layout):
    model, b = make_model(kind), batch(layout)
    assert loss.split_reason(model) is None
    labels = b["labels"]
    inputs = {k: v for k, v in b.items() if k != "labels"}
    hf = loss_and_grads(model, lambda: model(**inputs, labels=labels).loss)
    old = loss_and_grads(model, lambda: mean_of(old_token_loss_sum, model, b))
    new = loss_and_grads(model, lambda: mean_of(token_loss_sum, model, b))
    chunked = loss_and_grads(model, lambda: (lambda x, m: x.sum() / m.sum())(  # 3 rows a chunk: recomputed
        *loss.token_losses(model, inputs, labels, chunk_rows=3)))
    assert_same(new, hf)
    assert_same(new, old)
    assert_same(chunked, hf)
    assert max(g.abs().max() for g in new[1].values()) > 1e-3  # real gradients, not zeros both sides agree on


def test_gemma_soft_capping_matters_here():
    """The cap changes this tiny model's loss, so the Gemma cases above do check that it is applied."""
    capped, b = make_model("gemma3"), batch("padded")
    free = make_model("gemma3")
    free.config.final_logit_softcapping = None
    with torch.no_grad():
        a = mean_of(token_loss_sum, capped, b)
        c = mean_of(token_loss_sum, free, b)
    assert abs(float(a - c)) > 1e-3


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_all_masked_batch_gives_zero_and_a_usable_backward(kind):
    model, b = make_model(kind), batch("all-masked")
    total, count = token_loss_sum(model, b)
    assert count == 0 and float(total.detach()) == 0.0
    total.backward()  # the training loop calls backward on every micro-batch, trained tokens or not
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_head_sees_only_trained_rows_a_chunk_at_a_time(kind):
    model, b = make_model(kind), batch("padded")
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[:-1].numel()))
    try:
        losses, mask = loss.token_losses(model, {k: v for k, v in b.items() if k != "labels"}, b["labels"],
                                         chunk_rows=4)
    finally:
        handle.remove()
    trained = int((b["labels"][:, 1:] != -100).sum())
    assert losses.shape == (trained,) and int(mask.sum()) == trained
    assert seen[0] == 0  # the model's own forward projects no position
    assert sum(seen) == trained and max(seen) <= 4  # then the trained rows only, 4 at a time


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_lora_wrapped_model_matches_hf(kind):
    model = add_lora(make_model(kind), r=4, alpha=8)
    with torch.no_grad():  # B starts at zero: move it so the adapters change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    b = batch("packed-mask")
    assert loss.split_reason(model) is None
    inputs = {k: v for k, v in b.items() if k != "labels"}
    hf = loss_and_grads(model, lambda: model(**inputs, labels=b["labels"]).loss)
    new = loss_and_grads(model, lambda: mean_of(token_loss_sum, model, b))
    assert_same(new, hf)
    assert all("lora_" in name for name in new[1])


def test_lora_on_the_head_itself_is_applied():
    model = add_lora(make_model("llama", tie_word_embeddings=False), r=4, alpha=8, target_modules=("lm_head",))
    with torch.no_grad():
        model.base_model.model.lm_head.lora_B["default"].weight.normal_(0, 0.5)
    b = batch("padded")
    inputs = {k: v for k, v in b.items() if k != "labels"}
    hf = loss_and_grads(model, lambda: model(**inputs, labels=b["labels"]).loss)
    new = loss_and_grads(model, lambda: mean_of(token_loss_sum, model, b))
    assert_same(new, hf)
    with model.disable_adapter(), torch.no_grad():
        assert abs(float(mean_of(token_loss_sum, model, b) - hf[0])) > 1e-3  # the head's adapter mattered


def test_unknown_architecture_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(loss, "SPLIT_MODEL_TYPES", frozenset())
    monkeypatch.setattr(loss, "_warned", set())
    model, b = make_model("llama"), batch("padded")
    assert "llama" in loss.split_reason(model)
    with pytest.warns(UserWarning, match="every position.*'llama'"):
        fallback = loss_and_grads(model, lambda: mean_of(token_loss_sum, model, b))
    hf = loss_and_grads(model, lambda: model(**{k: v for k, v in b.items()}).loss)
    assert_same(fallback, hf)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token_loss_sum(model, b)  # warned once only


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_dpo_sequence_logps_equal_the_full_logits_computation(kind, lora):
    """DPO weighs each row's log-probability by its own factor: with LoRA the frozen-head path must scale the
    gradients of each row by it, as the full-logits computation does."""
    model = lora_model(kind) if lora else make_model(kind)
    g = torch.Generator().manual_seed(1)
    pairs = [{"prompt_ids": torch.randint(3, VOCAB, (n,), generator=g).tolist(),
              "chosen_ids": torch.randint(3, VOCAB, (c,), generator=g).tolist(),
              "rejected_ids": torch.randint(3, VOCAB, (r,), generator=g).tolist()}
             for n, c, r in ((4, 3, 6), (7, 5, 2), (2, 8, 4))]
    b = PreferenceCollator(pad_token_id=0)(pairs)
    weights = torch.linspace(-1, 1, 6)  # a loss that weighs each row differently, like DPO's
    old = loss_and_grads(model, lambda: (old_sequence_logps(model, b) * weights).sum())
    new = loss_and_grads(model, lambda: (sequence_logps(model, *reply_labels(b)) * weights).sum())
    assert_same(new, old)
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, *reply_labels(b)), old_sequence_logps(model, b),
                                   atol=1e-5, rtol=0)


def test_a_forward_patched_on_the_instance_keeps_the_full_path(monkeypatch):
    """accelerate wraps ``model.forward`` in autocast: a head applied outside it would run in another precision."""
    monkeypatch.setattr(loss, "_warned", set())
    model, b = make_model("llama"), batch("padded")
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    assert "accelerate" in loss.split_reason(model)
    with pytest.warns(UserWarning, match="replaced on the instance"):
        ours = loss_and_grads(model, lambda: mean_of(token_loss_sum, model, b))
    assert_same(ours, loss_and_grads(model, lambda: model(**b).loss))


def test_compiled_model_takes_the_split_path():
    model, b = make_model("gemma3"), batch("packed-mask")
    compiled = torch.compile(model, backend="eager")  # dynamo tracing without a C++ build: fast enough for a test
    assert loss.split_reason(compiled) is None
    ours = loss_and_grads(model, lambda: mean_of(token_loss_sum, compiled, b))
    assert_same(ours, loss_and_grads(model, lambda: model(**b).loss))


def lora_model(kind: str):
    model = add_lora(make_model(kind), r=4, alpha=8)
    with torch.no_grad():  # B starts at zero: move it so the adapters change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model


def largest_saved(model, compute, numel: int | None = None) -> int:
    """Last dimension of the widest tensor (not a weight) autograd keeps for backward while ``compute()`` runs;
    with ``numel``, how many such tensors of exactly that many elements it keeps."""
    sizes, weights = [0], {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        if t.dim() and t.numel() and t.untyped_storage().data_ptr() not in weights:
            sizes.append(t.shape[-1] if numel is None else int(t.numel() == numel))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        compute()
    return max(sizes) if numel is None else sum(sizes)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_frozen_head_keeps_no_logits_for_backward_and_matches_the_checkpointed_path(kind, monkeypatch):
    """LoRA leaves the head frozen: each row's gradient is computed in the forward, so nothing vocabulary-wide is
    saved and nothing is recomputed - and losses and gradients are those of the path that checkpoints chunks."""
    model, b = lora_model(kind), batch("padded")
    inputs = {k: v for k, v in b.items() if k != "labels"}
    mean = lambda chunk: lambda: (lambda x, m: x.sum() / m.sum())(  # noqa: E731
        *loss.token_losses(model, inputs, b["labels"], chunk_rows=chunk))
    step = mean(3)
    assert largest_saved(model, mean(None)) < VOCAB
    fast = loss_and_grads(model, step)
    monkeypatch.setattr(loss, "_frozen_linear", lambda head: False)
    assert largest_saved(model, mean(None)) == VOCAB  # autograd's path, one chunk, keeps logits (this test can fail)
    assert_same(fast, loss_and_grads(model, step))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        slow_bf16 = loss_and_grads(model, step)
    monkeypatch.undo()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_bf16 = loss_and_grads(model, step)
        head = model.get_output_embeddings()  # no bf16 copy of the head weight is kept (the model's own head call
        assert largest_saved(model, step, numel=head.weight.numel()) == 0  # on zero rows is skipped)
        monkeypatch.setattr(loss, "_headless", lambda head: __import__("contextlib").nullcontext())
        assert largest_saved(model, step, numel=head.weight.numel()) > 0  # without the skip, autocast keeps one
    torch.testing.assert_close(fast_bf16[0], slow_bf16[0], atol=1e-6, rtol=0)  # the same bf16 logits
    # bf16 gradients: rounding happens at another point (before the per-row scale, not after), so they are not
    # bitwise autograd's; they must be as close to the fp32 gradients as autograd's bf16 ones are.
    def err(g, exact):
        return float((g - exact).norm() / exact.norm())
    for name, exact in fast[1].items():
        assert err(fast_bf16[1][name], exact) <= 1.5 * err(slow_bf16[1][name], exact) + 1e-3, name
