"""ftlib.dpo: the loss equals TRL's DPOTrainer on the same batch; tokenisation, batching and training behave."""
import math
import os
import signal

import datasets
import pytest
import torch

from ftlib import dpo
from ftlib.checkpoint import latest_checkpoint, load_weights
from ftlib.config import ConfigError
from ftlib.lora import add_lora
from ftlib.loss import sequence_logps
from ftlib.samples import SampleError
from ftlib.tiny import tiny_llama_for
from ftlib.train import TrainingDiverged


def _rows(n=8):
    return [{"messages": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}],
             "chosen": f"It is {2 * i}.",
             "rejected": "I do not know, sorry about that. " * (i % 3 + 1)} for i in range(n)]


@pytest.fixture(scope="module")
def trl_trainer(tokenizer, tmp_path_factory):
    """A TRL DPOTrainer on a tiny random policy and a *different* tiny random reference (non-zero rewards)."""
    trl = pytest.importorskip("trl")
    ds = datasets.Dataset.from_list([{"prompt": r["messages"],
                                      "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                      "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in _rows()])
    args = trl.DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=4, beta=0.3,
                         report_to=[], use_cpu=True, max_length=None, seed=0)
    return trl.DPOTrainer(model=tiny_llama_for(tokenizer, seed=0), ref_model=tiny_llama_for(tokenizer, seed=1),
                          args=args, train_dataset=ds, processing_class=tokenizer)


def test_loss_and_gradients_equal_trl(trl_trainer):
    batch = next(iter(trl_trainer.get_train_dataloader()))
    model = trl_trainer.model
    model.train()
    model.zero_grad()
    trl_loss = trl_trainer.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ours = dpo.compute_dpo_loss(model, batch, reference=trl_trainer.ref_model, beta=0.3)
    ours.loss.backward()
    assert ours.loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    assert abs(ours.loss.item() - math.log(2)) > 1e-3  # the two random models differ: a non-trivial value
    for name, grad in trl_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)
    # TRL logged its reward metrics for this batch: same margin and accuracy
    logged = trl_trainer._metrics["train"]
    assert ours.metrics()["margin"] == pytest.approx(logged["rewards/margins"][-1], rel=1e-4, abs=1e-6)
    assert ours.metrics()["accuracy"] == pytest.approx(logged["rewards/accuracies"][-1])


def test_tokenisation_matches_trl(trl_trainer, tokenizer):
    """Same prompt and reply tokens as TRL, except that TRL also scores the newline ChatML puts after <|im_end|>."""
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    for record, theirs in zip(_rows(), trl_trainer.train_dataset):
        ours = dpo.tokenise_pair(record, tokenizer)
        assert ours["prompt_ids"] == theirs["prompt_ids"]
        for key in ("chosen_ids", "rejected_ids"):
            assert ours[key] + newline == theirs[key]
            assert ours[key][-1] == tokenizer.eos_token_id  # the reply ends with the end token, scored


def test_collator_layout_matches_trl(tokenizer):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    pairs = [dpo.tokenise_pair(r, tokenizer) for r in _rows(3)]
    ours = dpo.PreferenceCollator(tokenizer.pad_token_id)(pairs)
    theirs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(pairs)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[key], theirs[key]), key


def test_dpo_loss_by_hand():
    out = dpo.dpo_loss(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0]),
                       torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0]), beta=0.5)
    # pair 1: rewards 0.5 and -0.5 -> margin 1; pair 2: rewards 0 and 0.5 -> margin -0.5
    assert out.chosen_rewards.tolist() == [0.5, 0.0]
    assert out.rejected_rewards.tolist() == [-0.5, 0.5]
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics()["accuracy"] == 0.5 and out.metrics()["margin"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="beta"):
        dpo.dpo_loss(*[torch.zeros(1)] * 4, beta=0)


def test_sequence_logps_scores_only_reply_tokens(tokenizer, tiny_model):
    pair = dpo.tokenise_pair(_rows(1)[0], tokenizer)
    batch = dpo.PreferenceCollator(tokenizer.pad_token_id)([pair])
    with torch.no_grad():
        logps = sequence_logps(tiny_model, *dpo.reply_labels(batch))
        ids = pair["prompt_ids"] + pair["chosen_ids"]
        logits = tiny_model(torch.tensor([ids])).logits[0].log_softmax(-1)
    start = len(pair["prompt_ids"])
    by_hand = sum(logits[t - 1, ids[t]] for t in range(start, len(ids)))
    assert logps[0].item() == pytest.approx(by_hand.item(), rel=1e-5)  # padding and prompt not counted


def test_fresh_lora_policy_is_its_own_reference(tokenizer):
    """New adapters start at B = 0: policy == reference, so rewards are 0 and the loss is log 2."""
    policy = add_lora(tiny_llama_for(tokenizer), r=4, alpha=8)
    batch = dpo.PreferenceCollator(tokenizer.pad_token_id)([dpo.tokenise_pair(r, tokenizer) for r in _rows(2)])
    out = dpo.compute_dpo_loss(policy, batch, reference=None, beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.margins.abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="reference"):
        dpo.compute_dpo_loss(tiny_llama_for(tokenizer), batch, reference=None)


def test_training_raises_margin_and_accuracy(tokenizer, tmp_path):
    pairs = dpo.tokenise_preferences(datasets.Dataset.from_list(_rows(8)), tokenizer)
    loader = dpo.make_preference_loader(pairs, tokenizer, batch_size=4, seed=0)
    eval_loader = dpo.make_preference_loader(pairs, tokenizer, batch_size=8, shuffle=False)
    policy = tiny_llama_for(tokenizer, seed=0)
    reference = tiny_llama_for(tokenizer, seed=0)
    before = dpo.evaluate_dpo(policy, eval_loader, reference, beta=0.1)
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-6)
    result = dpo.train_dpo(policy, loader, dpo.DPOConfig(output_dir=str(tmp_path), learning_rate=3e-3, max_steps=12,
                                                         progress=False, eval_every=12), reference=reference)
    after = dpo.evaluate_dpo(policy, eval_loader, reference, beta=0.1)
    assert after["loss"] < before["loss"] - 0.1
    assert after["margin"] > 0.5 and after["accuracy"] == 1.0
    assert all(p.grad is None for p in reference.parameters())  # the reference stayed frozen
    assert [r["step"] for r in result.history] == list(range(1, 13))


def test_truncate_and_drop(tokenizer):
    record = {"messages": [{"role": "user", "content": "word " * 80}], "chosen": "yes " * 50, "rejected": "no"}
    full = dpo.tokenise_pair(record, tokenizer)
    cut = dpo.tokenise_pair(record, tokenizer, max_length=64, max_prompt_length=24)
    assert cut["prompt_ids"] == full["prompt_ids"][-24:]  # the end of the prompt (the generation prompt) is kept
    assert cut["chosen_ids"] == full["chosen_ids"][:40]  # the start of the reply is kept
    assert cut["rejected_ids"] == full["rejected_ids"]  # short enough already
    assert dpo.tokenise_pair(record, tokenizer, max_length=64, overlong="drop") is None


def test_bad_records_name_the_field(tokenizer):
    with pytest.raises(SampleError, match="record 3.*'rejected'"):
        dpo.tokenise_pair({"messages": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": ""},
                          tokenizer, index=3)
    with pytest.raises(SampleError, match="messages"):
        dpo.tokenise_pair({"messages": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"},
                          tokenizer)


# ---------------------------------------------------------------- DPO on ftlib.train's loop
def _loader(tokenizer, batch_size=2, hook=None):
    """8 pairs, shuffled per epoch; ``hook(n)`` runs before the n-th batch is collated (1-based)."""
    pairs = dpo.tokenise_preferences(datasets.Dataset.from_list(_rows(8)), tokenizer)
    loader = dpo.make_preference_loader(pairs, tokenizer, batch_size=batch_size, seed=0)
    if hook:
        collate, calls = loader.collate_fn, {"n": 0}

        def hooked(rows):
            calls["n"] += 1
            hook(calls["n"])
            return collate(rows)

        loader.collate_fn = hooked
    return loader


def _dpo_cfg(tmp_path, **kw):  # fp32 on every machine: exact comparisons
    return dpo.DPOConfig(**{"output_dir": str(tmp_path), "learning_rate": 5e-3, "max_steps": 6, "progress": False,
                            "bf16": False, **kw})


def _policy(tokenizer, seed=0):
    return add_lora(tiny_llama_for(tokenizer, seed=seed), r=4, alpha=8)  # reference: the adapters switched off


def _losses(result):
    return [r["loss"] for r in result.history]


def test_dpo_step_loss_is_the_pair_mean_and_accumulation_matches_one_batch(tokenizer, tmp_path):
    batch4 = next(iter(dpo.make_preference_loader(
        dpo.tokenise_preferences(datasets.Dataset.from_list(_rows(4)), tokenizer), tokenizer, 4, shuffle=False)))
    expected = dpo.compute_dpo_loss(_policy(tokenizer), batch4).loss.item()
    pairs = dpo.tokenise_preferences(datasets.Dataset.from_list(_rows(4)), tokenizer)
    one = dpo.train_dpo(_policy(tokenizer), dpo.make_preference_loader(pairs, tokenizer, 4, shuffle=False),
                        _dpo_cfg(tmp_path / "one", max_steps=2))
    acc = dpo.train_dpo(_policy(tokenizer), dpo.make_preference_loader(pairs, tokenizer, 2, shuffle=False),
                        _dpo_cfg(tmp_path / "acc", max_steps=2, grad_accum=2))
    assert one.history[0]["loss"] == pytest.approx(expected, abs=1e-6)  # log 2 at the start: policy == reference
    assert acc.history[0]["pairs"] == 4 and one.history[1]["loss"] < expected - 1e-3  # step 1 learned something
    assert _losses(acc) == pytest.approx(_losses(one), abs=1e-6)  # two half batches = one batch, gradients too
    assert {"margin", "accuracy", "chosen_reward", "rejected_reward", "grad_norm", "lr"} <= one.history[0].keys()


def test_dpo_sigint_saves_and_resume_matches_an_uninterrupted_run(tokenizer, tmp_path):
    full_policy = _policy(tokenizer)
    full = dpo.train_dpo(full_policy, _loader(tokenizer), _dpo_cfg(tmp_path / "full"))  # 4 batches an epoch

    def interrupt(n):
        if n == 3:  # during step 3: it finishes, saves, and the run returns
            os.kill(os.getpid(), signal.SIGINT)

    stopped = dpo.train_dpo(_policy(tokenizer), _loader(tokenizer, hook=interrupt), _dpo_cfg(tmp_path / "cut"))
    assert stopped.interrupted and stopped.step == 3
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-3"
    resumed_policy = _policy(tokenizer, seed=7)  # other weights: the checkpoint must bring back the trained ones
    resumed = dpo.train_dpo(resumed_policy, _loader(tokenizer), _dpo_cfg(tmp_path / "cut", resume=True))
    assert [r["step"] for r in resumed.history] == [4, 5, 6]  # crosses into the second epoch
    assert _losses(stopped) + _losses(resumed) == _losses(full)
    assert _losses(full)[-1] < _losses(full)[0]
    for (name, a), (_, b) in zip(full_policy.state_dict().items(), resumed_policy.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="beta: 0.1 -> 0.2"):  # a different run cannot continue this one
        dpo.train_dpo(_policy(tokenizer), _loader(tokenizer), _dpo_cfg(tmp_path / "cut", beta=0.2, resume=True))


def test_dpo_nan_stops_with_training_diverged_and_keeps_the_last_checkpoint(tokenizer, tmp_path):
    policy = _policy(tokenizer)

    def poison(n):
        if n == 3:  # during step 3: break the adapters
            with torch.no_grad():
                for name, p in policy.named_parameters():
                    if "lora_A" in name:
                        p.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="step 3.*intact"):
        dpo.train_dpo(policy, _loader(tokenizer, hook=poison), _dpo_cfg(tmp_path, save_every=1))
    good = latest_checkpoint(tmp_path)
    assert good.name == "checkpoint-2"
    fresh = _policy(tokenizer, seed=3)
    load_weights(good, fresh)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_reference_log_probs_computed_once_give_the_same_evaluation(tokenizer, tmp_path):
    """Held-out pairs need the reference's forward once (TRL's precompute_ref_log_probs): after training, an
    evaluation with the log-probs kept from the start equals one that runs the reference again."""
    pairs = dpo.tokenise_preferences(datasets.Dataset.from_list(_rows(8)), tokenizer)
    eval_loader = dpo.make_preference_loader(pairs, tokenizer, batch_size=3, shuffle=False)  # 3 batches, one short
    policy = add_lora(tiny_llama_for(tokenizer, seed=0), r=4, alpha=8)
    kept = dpo.reference_logps(policy, eval_loader)
    assert policy.training  # handed back as it came
    loader = dpo.make_preference_loader(pairs, tokenizer, batch_size=4, seed=0)
    dpo.train_dpo(policy, loader, dpo.DPOConfig(output_dir=str(tmp_path), learning_rate=3e-3, max_steps=6,
                                                progress=False))
    again = dpo.evaluate_dpo(policy, eval_loader)
    assert again["margin"] > 0.05  # training moved the policy: a non-trivial comparison
    assert dpo.evaluate_dpo(policy, eval_loader, ref_logps=kept) == pytest.approx(again, rel=1e-6, abs=1e-7)
    with pytest.raises(ValueError, match="3 batches given, the loader has 1"):
        dpo.evaluate_dpo(policy, dpo.make_preference_loader(pairs, tokenizer, batch_size=8, shuffle=False),
                         ref_logps=kept)
