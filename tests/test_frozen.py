"""Frozen weights held in bf16 (ftlib.frozen): the same losses and adapter gradients as autocast's per-matmul casts,
fp32 weights in checkpoints and after training, and nothing changed where nothing is frozen."""
import torch
from safetensors.torch import load_file

from ftlib import loss
from ftlib.checkpoint import latest_checkpoint
from ftlib.frozen import FrozenCast, frozen_in_dtype
from ftlib.lora import add_lora
from ftlib.testing import tiny_gemma3
from ftlib.tiny import tiny_llama
from ftlib.train import TokenLoss, TrainConfig, train

VOCAB = 64


def batch(seed=0, rows=3, length=16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def lora_model(make=tiny_llama):
    torch.manual_seed(0)
    model = add_lora(make(vocab_size=VOCAB, seed=0), r=4, alpha=8)
    for name, p in model.named_parameters():  # B starts at zero: give the adapters a real contribution
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    return model


def loss_and_grads(model, b, cast: bool):
    model.zero_grad(set_to_none=True)
    with frozen_in_dtype(model, torch.bfloat16 if cast else None), torch.autocast("cpu", dtype=torch.bfloat16):
        loss, n, _ = TokenLoss()(model, b)
        (loss / n).backward()
    return float(loss.detach() / n), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_bf16_frozen_weights_give_autocasts_losses_and_adapter_gradients():
    for make in (tiny_llama, tiny_gemma3):  # Gemma: tied head, soft-capping, scaled embeddings
        model, b = lora_model(make), batch()
        loss_autocast, grads_autocast = loss_and_grads(model, b, cast=False)
        loss_cast, grads_cast = loss_and_grads(model, b, cast=True)
        # autocast rounds the fp32 weight to bf16 in each matmul; the cast rounds it once: the same operands
        assert loss_cast == loss_autocast
        assert grads_cast.keys() == grads_autocast.keys() and len(grads_cast) > 0
        for k in grads_cast:
            torch.testing.assert_close(grads_cast[k], grads_autocast[k], rtol=0, atol=0)


def test_only_frozen_linears_are_cast_embeddings_and_head_stay_fp32():
    model = lora_model(tiny_gemma3)
    frozen = FrozenCast(model, torch.bfloat16)
    names = {n for n, p in model.named_parameters() if any(p is w for w in frozen.weights)}
    assert names and all("base_layer" in n for n in names), names  # q/k/v/o/gate/up/down of every layer
    frozen.cast()
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(dtypes[n] == torch.bfloat16 for n in names)
    assert all(d == torch.float32 for n, d in dtypes.items() if n not in names)  # adapters, norms, tied embedding
    # the tied head keeps its fp32 tensor (the embedding lookup reads it) but lends the loss a bf16 copy made once
    head = model.get_output_embeddings().weight
    lent = loss._in_dtype(head, torch.bfloat16)
    assert lent is frozen.head[1] and lent is loss._in_dtype(head, torch.bfloat16) and torch.equal(lent, head.to(lent))
    frozen.restore()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert loss._in_dtype(head, torch.bfloat16) is not lent and not loss._head_casts  # taken back: cast per call


def test_full_fine_tuning_and_fp32_runs_cast_nothing():
    model = tiny_llama(vocab_size=VOCAB, seed=0)  # every weight trained
    assert FrozenCast(model, torch.bfloat16).weights == []
    with frozen_in_dtype(lora_model(), None) as frozen:
        assert frozen is None


def run(tmp_path, cast: bool, **kw):
    model = lora_model()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    cfg = TrainConfig(output_dir=str(tmp_path), learning_rate=1e-2, max_steps=4, progress=False, bf16=True,
                      cast_frozen=cast, **kw)
    result = train(model, [batch(s) for s in range(4)], cfg)
    return model, base, [r["loss"] for r in result.history]


def test_training_with_cast_frozen_weights_matches_autocast_and_leaves_fp32_weights(tmp_path):
    model_cast, base, losses_cast = run(tmp_path / "cast", cast=True, save_every=2)
    model_plain, _, losses_plain = run(tmp_path / "plain", cast=False)
    assert losses_cast == losses_plain
    for (name, p), q in zip(model_cast.named_parameters(), model_plain.parameters()):
        assert p.dtype == torch.float32, name  # fp32 again after training
        torch.testing.assert_close(p, q, rtol=0, atol=0)
        if name in base:
            assert torch.equal(p, base[name]), name  # the frozen weights came back bit for bit
    saved = load_file(str(latest_checkpoint(tmp_path / "cast") / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}  # the checkpoint holds the fp32 weights
