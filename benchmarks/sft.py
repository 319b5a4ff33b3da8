"""SFT speed and memory: ftlib's loop vs TRL's SFTTrainer on identical batches, each trainer in a fresh process.

    python -m benchmarks.sft [--cases gemma-lora smollm-full] [--precisions bf16 fp32] [--steps 8] [--warmup 2]
                             [--max-length 256] [--batch-size 4] [--trl-checkpointing] [--loss-chunk N]

Cases (offline assets):

* ``gemma-lora``: the base model Gemma-3-270M with LoRA r=16, alpha 32 on every attention and MLP projection
  (``ftlib.lora.add_lora``). Each trainer's process seeds torch the same way before wrapping, so both start from the
  same adapters; TRL gets the wrapped ``PeftModel`` (the model ``SFTTrainer(peft_config=...)`` would build).
* ``smollm-full``: SmolLM2-135M-Instruct, full fine-tuning.

For each case and precision, three runs (and in bf16 with LoRA a fourth: ftlib dynamic with
``TrainConfig(cast_frozen=False)``, the frozen weights recast by autocast in every matmul as before issue 25): TRL
``SFTTrainer`` with dynamic padding; ftlib's ``train`` with dynamic padding on the *same* batches (the Alpaca demo
tokenised by ftlib - prompt masked, EOS kept - shuffled once, then read in order by both); ftlib with packed rows of
``--max-length`` tokens (other batches, fuller rows). Alike: AdamW (0.9, 0.99), weight decay 0.1 on matrices, lr
1e-4 cosine, clipping 1.0, no gradient checkpointing (TRL's SFTConfig turns it on by default; we turn it off so both
do the same work; ``--trl-checkpointing`` leaves it on). Precision ``bf16``: bf16 autocast over fp32 weights for
both (TRL ``bf16=True``, ftlib ``TrainConfig(bf16=True)``), offered by default only where the CPU has native bf16
(emulated bf16 is slower than fp32); ``fp32``: no autocast.

Each run is a fresh ``python -m benchmarks.sft --child ...`` process, so its peak RSS (VmHWM) is its own, not the
high-water mark of an earlier run. Reported: real (non-pad) tokens per second over the steps after the first
``--warmup`` (the loops' own step clocks), and the median of the per-step rates (a step slowed by another process on
a shared machine moves the first, hardly the second); peak RSS, and the part of it added after the model was loaded;
the loss curves (ftlib dynamic vs TRL: the largest per-step gap; same batches, so they should agree); the load
average when each run ended.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ftlib.loss  # noqa: E402
from ftlib.batching import make_dataloader, pack_groups  # noqa: E402
from ftlib.data import load_instructions  # noqa: E402
from ftlib.device import cpu_has_native_bf16  # noqa: E402
from ftlib.lora import add_lora, count_parameters  # noqa: E402
from ftlib.models import load_model  # noqa: E402
from ftlib.samples import tokenise_dataset  # noqa: E402
from ftlib.train import TrainConfig, train  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM datasheets)
LR = 1e-4


@dataclass(frozen=True)
class Case:
    role: str  # ftlib.models role in the offline profile
    lora: bool
    label: str


CASES = {"gemma-lora": Case("base", True, "Gemma-3-270M base, LoRA r=16 (all projections)"),
         "smollm-full": Case("instruct", False, "SmolLM2-135M-Instruct, full fine-tuning")}
RUNS = (("trl", "dynamic", "TRL SFTTrainer (dynamic pad)"), ("ftlib", "dynamic", "ftlib train (dynamic pad)"),
        ("ftlib", "packed", "ftlib train (packed)"),
        # bf16 only: frozen weights recast by autocast in every matmul, as before issue 25 (TrainConfig.cast_frozen)
        ("ftlib-recast", "dynamic", "ftlib train (dynamic pad), frozen weights recast per matmul"))


def samples(tokenizer, max_length):
    """The Alpaca demo tokenised (prompt masked, EOS kept), shuffled once: both trainers then read it in order."""
    ds = load_instructions("offline")
    tok, _ = tokenise_dataset(ds, tokenizer, max_length=max_length, overlong="drop")
    return tok.shuffle(seed=0).flatten_indices()


def real_token_counts(tok, strategy: str, steps: int, batch_size: int, max_length: int) -> list[int]:
    """Non-pad tokens of each of the first ``steps`` batches (``shuffle=False``, so the order is known)."""
    lengths = [len(x) for x in tok["input_ids"]]
    groups = [[i] for i in range(len(lengths))] if strategy == "dynamic" else pack_groups(lengths, max_length)
    b = batch_size
    return [sum(lengths[i] for g in groups[k * b:(k + 1) * b] for i in g) for k in range(steps)]


def memory_kib(field: str) -> int:
    """``VmHWM`` (peak resident set) or ``VmRSS`` of this process, in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource  # not Linux: only the peak is known (KiB on Linux, bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if platform.system() == "Darwin" else peak


def run_ftlib(model, tok, spec, pad_token_id) -> tuple[list[float], list[float]]:
    loader = make_dataloader(tok, spec["strategy"], spec["batch_size"], spec["max_length"], shuffle=False,
                             pad_token_id=pad_token_id, group_by_length=False)
    it = iter(loader)
    batches = [next(it) for _ in range(spec["steps"])]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(output_dir=out, learning_rate=LR, max_steps=spec["steps"], progress=False, warmup_steps=0,
                          save_final=False, bf16=spec["bf16"], cast_frozen=spec["trainer"] != "ftlib-recast")
        result = train(model, batches, cfg)
    return [r["loss"] for r in result.history], [r["seconds"] for r in result.history]  # the loop's own clock


def run_trl(model, tokenizer, tok, spec) -> tuple[list[float], list[float]]:
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.append(["b", time.perf_counter()])

        def on_step_end(self, *a, **k):
            stamps.append(["e", time.perf_counter()])

    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(output_dir=out, per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
                        learning_rate=LR, lr_scheduler_type="cosine", weight_decay=0.1, adam_beta2=0.99,
                        max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no",
                        max_length=spec["max_length"], bf16=spec["bf16"], use_cpu=not torch.cuda.is_available(),
                        seed=0, dataloader_drop_last=True, disable_tqdm=True,
                        activation_checkpointing=spec["trl_checkpointing"], train_sampling_strategy="sequential")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=tok.select_columns(["input_ids", "labels"]),
                             processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    begins = [t for k, t in stamps if k == "b"]
    ends = [t for k, t in stamps if k == "e"]
    return losses, [e - b for b, e in zip(begins, ends)]


def child(spec: dict) -> dict:
    """One trainer, one case, one precision, in this (fresh) process."""
    case = CASES[spec["case"]]
    if spec.get("loss_chunk"):
        ftlib.loss.CHUNK_ELEMENTS = ftlib.loss.FROZEN_CHUNK_ELEMENTS = spec["loss_chunk"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(case.role, dtype=torch.float32, device=device)
    if case.lora:
        torch.manual_seed(0)  # the adapters' random A matrices: the same in every process
        model = add_lora(model, r=16, alpha=32)
    tok = samples(tokenizer, spec["max_length"])
    loaded_kib = memory_kib("VmRSS")
    torch.manual_seed(0)
    if spec["trainer"] == "trl":
        losses, seconds = run_trl(model, tokenizer, tok, spec)
    else:
        losses, seconds = run_ftlib(model, tok, spec, tokenizer.pad_token_id)
    tokens = real_token_counts(tok, spec["strategy"], spec["steps"], spec["batch_size"], spec["max_length"])
    return {"losses": losses, "seconds": seconds, "tokens": tokens, "peak_kib": memory_kib("VmHWM"),
            "load": os.getloadavg()[0],
            "loaded_kib": loaded_kib, "samples": len(tok), **count_parameters(model)}


def spawn(spec: dict) -> dict:
    """Run ``child(spec)`` in a new interpreter and return its result (stderr shown only on failure)."""
    cmd = [sys.executable, "-m", "benchmarks.sft", "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"benchmarks.sft: the {spec['trainer']} {spec['strategy']} run of {spec['case']} "
                         f"({'bf16' if spec['bf16'] else 'fp32'}) failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len("RESULT "):])


def timed_rate(r: dict, warmup: int) -> float:
    """Real tokens / seconds over the timed steps (all of them: the headline figure)."""
    return sum(r["tokens"][warmup:]) / sum(r["seconds"][warmup:])


def median_rate(r: dict, warmup: int) -> float:
    """Median over the timed steps of each step's real tokens / seconds: robust to a step slowed by another process
    on a shared machine (the trainers see the same batches, so their medians compare like with like)."""
    return statistics.median(n / s for n, s in zip(r["tokens"][warmup:], r["seconds"][warmup:]))


def report(case: str, precision: str, results: list[dict], args) -> dict:
    """Print one case/precision block (a markdown table and the loss curves); return its headline figures."""
    trl = results[0]
    trl_tps, trl_med, trl_peak = timed_rate(trl, args.warmup), median_rate(trl, args.warmup), trl["peak_kib"]
    gib = 1024 ** 2
    print(f"\n### {CASES[case].label}, {precision} - {trl['samples']} samples <= {args.max_length} tokens, batch "
          f"{args.batch_size}, {args.steps} steps (first {args.warmup} not timed); trainable "
          f"{trl['trainable'] / 1e6:.2f} M of {trl['total'] / 1e6:.1f} M parameters")
    print("| run | real tok/s | vs TRL | median step tok/s | vs TRL | peak RSS GiB | vs TRL | added after load GiB "
          "| mean loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (_, _, label), r in zip(RUNS, results):
        if label.startswith("TRL") and args.trl_checkpointing:
            label = "TRL SFTTrainer (dynamic, ckpt on)"
        tps, med = timed_rate(r, args.warmup), median_rate(r, args.warmup)
        print(f"| {label} | {tps:.0f} | {tps / trl_tps:.2f}x | {med:.0f} | {med / trl_med:.2f}x | "
              f"{r['peak_kib'] / gib:.2f} | "
              f"{r['peak_kib'] / trl_peak:.2f}x | {(r['peak_kib'] - r['loaded_kib']) / gib:.2f} | "
              f"{sum(r['losses']) / len(r['losses']):.4f} |")
    dyn = results[1]
    gap = max(abs(a - b) for a, b in zip(trl["losses"], dyn["losses"]))
    print("loss, same batches   TRL:", " ".join(f"{x:.4f}" for x in trl["losses"]))
    print("                   ftlib:", " ".join(f"{x:.4f}" for x in dyn["losses"]))
    print(f"largest per-step loss gap, ftlib vs TRL: {gap:.1e}")
    print("step seconds TRL:", " ".join(f"{x:.2f}" for x in trl["seconds"]), "| ftlib:",
          " ".join(f"{x:.2f}" for x in dyn["seconds"]))
    print("load average (1 min) at the end of each run:", " / ".join(f"{r['load']:.1f}" for r in results), flush=True)
    if torch.cuda.is_available() and not CASES[case].lora:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        for label, r in zip(("TRL", "ftlib dynamic", "ftlib packed"), results):
            if peak:
                print(f"MFU {label}: {6 * r['total'] * timed_rate(r, args.warmup) / peak:.1%} of "
                      f"{peak / 1e12:.0f} TFLOP/s ({name})")
    recast = results[3] if len(results) > 3 else None
    return {"speed": timed_rate(dyn, args.warmup) / trl_tps, "median": median_rate(dyn, args.warmup) / trl_med,
            "memory": dyn["peak_kib"] / trl_peak, "gap": gap,
            "recast": timed_rate(recast, args.warmup) / trl_tps if recast else None}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--precisions", nargs="+", choices=["bf16", "fp32"], default=None,
                   help="default: bf16 and fp32 where the CPU (or a GPU) runs bf16 natively, else fp32")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--trl-checkpointing", action="store_true",
                   help="leave TRL's default activation checkpointing on (recomputes the forward: slower)")
    p.add_argument("--loss-chunk", type=int, default=None,
                   help="ftlib.loss.CHUNK_ELEMENTS and FROZEN_CHUNK_ELEMENTS for ftlib's runs (logits per chunk; "
                        "defaults 2**28, and 2**25 for a frozen head): smaller trades speed for peak memory")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.steps <= args.warmup:
        raise SystemExit(f"benchmarks.sft: --steps {args.steps} must exceed --warmup {args.warmup}")
    native = torch.cuda.is_available() or cpu_has_native_bf16()
    precisions = args.precisions or (["bf16", "fp32"] if native else ["fp32"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native}; "
          f"cases {args.cases}, precisions {precisions}; "
          f"ftlib loss chunk {args.loss_chunk or ftlib.loss.CHUNK_ELEMENTS} logits "
          f"(frozen head: {args.loss_chunk or ftlib.loss.FROZEN_CHUNK_ELEMENTS})", flush=True)
    start, headline = time.perf_counter(), {}
    for case in args.cases:
        for precision in precisions:
            results = []
            for trainer, strategy, _ in RUNS:
                if trainer == "ftlib-recast" and (precision != "bf16" or not CASES[case].lora):
                    continue  # the same run as "ftlib dynamic" there: nothing frozen is cast
                spec = {"case": case, "trainer": trainer, "strategy": strategy, "bf16": precision == "bf16",
                        "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                        "trl_checkpointing": args.trl_checkpointing, "loss_chunk": args.loss_chunk}
                results.append(spawn(spec))
            headline[(case, precision)] = report(case, precision, results, args)
    print("\nftlib dynamic vs TRL, same batches")
    print("| case | precision | real tok/s | median step | peak RSS | largest loss gap | without the frozen cast |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (case, precision), h in headline.items():
        recast = f"{h['recast']:.2f}x" if h["recast"] else "-"
        print(f"| {case} | {precision} | {h['speed']:.2f}x | {h['median']:.2f}x | {h['memory']:.2f}x "
              f"| {h['gap']:.1e} | {recast} |")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
