"""SFT throughput: ftlib's loop vs TRL's SFTTrainer, same model, data, lengths, global batch and precision.

    python -m benchmarks.sft [--steps 12] [--max-length 256] [--batch-size 4] [--trl-checkpointing]

Both train SmolLM2-135M-Instruct (offline asset) on the same tokenised Alpaca demo samples (prompt masked, EOS
kept), shuffled once and then read in the same order by both, so the dynamic-padding runs see identical batches;
fp32 on CPU / bf16 autocast on CUDA; AdamW, cosine decay, clipping and weight-decay groups alike; no gradient
checkpointing (TRL's SFTConfig turns it on by default; we turn it off so both do the same work). Their loss
curves should then agree step by step, which checks that the two loops compute the same thing. Throughput counts
*real* (non-pad) tokens per second of training; the first step of each run is excluded as warm-up. On CUDA it also
prints MFU:
6 x parameters x real tokens / time / peak bf16 FLOP/s (attention FLOPs ignored, so a slight underestimate).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ftlib.batching import make_dataloader, pack_groups  # noqa: E402
from ftlib.data import load_instructions  # noqa: E402
from ftlib.models import load_model  # noqa: E402
from ftlib.samples import tokenise_dataset  # noqa: E402
from ftlib.train import TrainConfig, train  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM datasheets)


def samples(tokenizer, max_length):
    """The Alpaca demo tokenised (prompt masked, EOS kept), shuffled once: both trainers then read it in order."""
    ds = load_instructions("offline")
    tok, _ = tokenise_dataset(ds, tokenizer, max_length=max_length, overlong="drop")
    return tok.shuffle(seed=0).flatten_indices()


def real_token_counts(tok, strategy, args) -> list[int]:
    """Non-pad tokens of each of the first ``args.steps`` batches (``shuffle=False``, so the order is known)."""
    lengths = [len(x) for x in tok["input_ids"]]
    groups = [[i] for i in range(len(lengths))] if strategy == "dynamic" else pack_groups(lengths, args.max_length)
    b = args.batch_size
    return [sum(lengths[i] for g in groups[k * b:(k + 1) * b] for i in g) for k in range(args.steps)]


def run_ftlib(tok, strategy, args, device, pad_token_id):
    model, _ = load_model("instruct", dtype=torch.float32, device=device)
    loader = make_dataloader(tok, strategy, args.batch_size, args.max_length, shuffle=False,
                             pad_token_id=pad_token_id, group_by_length=False)
    it = iter(loader)
    batches = [next(it) for _ in range(args.steps)]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(output_dir=out, learning_rate=1e-4, max_steps=args.steps, progress=False, warmup_steps=0,
                          save_final=False, bf16=device.type == "cuda")  # the precision run_trl gives TRL
        result = train(model, batches, cfg)
    times = [row["seconds"] for row in result.history]  # the loop's own step times
    tokens = real_token_counts(tok, strategy, args)
    return [r["loss"] for r in result.history], sum(tokens[1:]) / sum(times[1:]), model.num_parameters()


def run_trl(tok, args, device):
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_model("instruct", dtype=torch.float32, device=device)
    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.append(["b", time.perf_counter()])

        def on_step_end(self, *a, **k):
            stamps.append(["e", time.perf_counter()])

    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                        learning_rate=1e-4, lr_scheduler_type="cosine", weight_decay=0.1, adam_beta2=0.99,
                        max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no",
                        max_length=args.max_length, bf16=device.type == "cuda", use_cpu=device.type != "cuda",
                        seed=0, dataloader_drop_last=True, disable_tqdm=True,
                        activation_checkpointing=args.trl_checkpointing,
                        train_sampling_strategy="sequential")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=tok.select_columns(["input_ids", "labels"]),
                             processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
    real = real_token_counts(tok, "dynamic", args)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    begins = [t for k, t in stamps if k == "b"]
    ends = [t for k, t in stamps if k == "e"]
    durations = [e - b for b, e in zip(begins, ends)]
    return losses, sum(real[1:]) / sum(durations[1:])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--trl-checkpointing", action="store_true",
                   help="leave TRL's default activation checkpointing on (recomputes the forward: slower)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    _, tokenizer = load_model("instruct")
    tok = samples(tokenizer, args.max_length)
    print(f"device {device}, {len(tok)} samples <= {args.max_length} tokens, batch {args.batch_size}, "
          f"{args.steps} steps (first excluded), torch threads {torch.get_num_threads()}")
    trl_losses, trl_tps = run_trl(tok, args, device)
    dyn_losses, dyn_tps, n_params = run_ftlib(tok, "dynamic", args, device, tokenizer.pad_token_id)
    pack_losses, pack_tps, _ = run_ftlib(tok, "packed", args, device, tokenizer.pad_token_id)
    print(f"{'run':28} {'real tok/s':>10} {'vs TRL':>7}  mean loss (all steps)")
    trl_name = "TRL (dynamic, ckpt on)" if args.trl_checkpointing else "TRL SFTTrainer (dynamic pad)"
    for name, tps, losses in [(trl_name, trl_tps, trl_losses),
                              ("ftlib loop (dynamic pad)", dyn_tps, dyn_losses),
                              ("ftlib loop (packed)", pack_tps, pack_losses)]:
        print(f"{name:28} {tps:10.0f} {tps / trl_tps:6.2f}x  {sum(losses) / len(losses):.3f}")
    print("loss curves (same batches)  TRL:", [round(x, 3) for x in trl_losses])
    print("                          ftlib:", [round(x, 3) for x in dyn_losses])
    gap = max(abs(a - b) for a, b in zip(trl_losses, dyn_losses))
    print(f"largest per-step loss gap, ftlib vs TRL: {gap:.2e}")
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        if peak:
            for label, tps in [("TRL", trl_tps), ("ftlib dynamic", dyn_tps), ("ftlib packed", pack_tps)]:
                print(f"MFU {label}: {6 * n_params * tps / peak:.1%} of {peak / 1e12:.0f} TFLOP/s ({name})")


if __name__ == "__main__":
    main()
