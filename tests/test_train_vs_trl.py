"""The peer check for the training loop: on the same batches, ftlib's loop and TRL's SFTTrainer take the same steps.

Same tiny random model, same tokenised samples read in the same order, same AdamW / cosine / clipping / weight-decay
groups, no gradient checkpointing: the per-step losses and the final weights must agree to float rounding. With
gradient accumulation both normalise the loss by the trained tokens of the whole step, so that case agrees too.
"""
import datasets
import pytest
import torch

from ftlib.batching import make_dataloader
from ftlib.samples import tokenise_dataset
from ftlib.tiny import tiny_llama_for
from ftlib.train import TrainConfig, train

STEPS, BATCH = 4, 2


@pytest.fixture(scope="module")
def samples(tokenizer):
    rows = [{"instruction": f"Add {i} and {i * 3}.", "input": "" if i % 2 else f"Show the working for {i}.",
             "output": f"{i} plus {i * 3} is {4 * i}." + " Done." * (i % 4)} for i in range(16)]
    tok, _ = tokenise_dataset(datasets.Dataset.from_list(rows), tokenizer, max_length=128)
    return tok.select_columns(["input_ids", "labels"])


def run_trl(samples, tokenizer, tmp_path, grad_accum):
    trl = pytest.importorskip("trl")
    model = tiny_llama_for(tokenizer, seed=0)
    args = trl.SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=BATCH, max_steps=STEPS,
                         gradient_accumulation_steps=grad_accum, learning_rate=3e-3, lr_scheduler_type="cosine",
                         weight_decay=0.1, adam_beta2=0.99, max_grad_norm=1.0, logging_steps=1, report_to=[],
                         save_strategy="no", max_length=128, bf16=False, use_cpu=True, seed=0, disable_tqdm=True,
                         activation_checkpointing=False, train_sampling_strategy="sequential")
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=samples, processing_class=tokenizer)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], model


def run_ftlib(samples, tokenizer, tmp_path, grad_accum):
    model = tiny_llama_for(tokenizer, seed=0)
    loader = make_dataloader(samples, "dynamic", BATCH, shuffle=False, group_by_length=False,
                             pad_token_id=tokenizer.pad_token_id)
    cfg = TrainConfig(output_dir=str(tmp_path), learning_rate=3e-3, max_steps=STEPS, grad_accum=grad_accum,
                      progress=False, save_final=False, bf16=False)  # fp32, as TRL above
    return [r["loss"] for r in train(model, loader, cfg).history], model


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_same_losses_and_weights_as_trl_sft_trainer(samples, tokenizer, tmp_path, grad_accum):
    trl_losses, trl_model = run_trl(samples, tokenizer, tmp_path / "trl", grad_accum)
    ours, our_model = run_ftlib(samples, tokenizer, tmp_path / "ftlib", grad_accum)
    assert len(ours) == len(trl_losses) == STEPS
    assert ours == pytest.approx(trl_losses, abs=1e-4)  # TRL logs losses rounded to 4 decimals
    assert ours[-1] < ours[0] - 0.2  # real steps, not a no-op both sides agree on
    start = tiny_llama_for(tokenizer, seed=0)
    moved = [(a - b).abs().max() for a, b in zip(our_model.parameters(), start.parameters())]
    assert min(moved) > 1e-4  # every tensor was updated
    for (name, a), b in zip(our_model.named_parameters(), trl_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{name} differs after {STEPS} steps")
