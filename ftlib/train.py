"""The training loop: plain PyTorch, readable top to bottom, safe to interrupt. SFT and DPO both run it.

It is the article's loop (AdamW, cosine decay, gradient clipping, cross-entropy, tqdm) plus what an ML engineer
needs to trust a run: loss normalised by the number of trained *units* (tokens for SFT, pairs for DPO: so gradient
accumulation and several processes give the same result as one big batch), warmup, bf16 autocast where the
hardware runs bf16 natively (CUDA, AVX512-BF16/AMX CPUs), logits only where a token is trained (ftlib.loss),
periodic evaluation, metrics in JSONL, the resolved config in ``run_config.json`` from the first second (see
ftlib.config), atomic checkpoints with exact resume, a clean stop on SIGINT/SIGTERM, and a stop on NaN.

What is minimised is an :class:`~ftlib.objective.Objective` (ftlib.objective); the default, ``TokenLoss``, is
SFT's cross-entropy. ``ftlib.dpo`` plugs in the DPO loss and gets everything else (checkpoints, resume, SIGINT
save, autocast, the NaN stop) from here.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm  # for tqdm.write; the bar itself is ftlib.progress's

from ftlib.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, unwrap
from ftlib.config import TrainConfig, check_resume, run_record, write_run_record
from ftlib.device import train_dtype
from ftlib.distributed import all_reduce_min, all_reduce_sum, barrier, rank_world
from ftlib.frozen import FrozenCast
from ftlib.objective import Objective, TokenLoss, evaluate_loss, to_device, token_loss_sum
from ftlib.objective import autocast as _autocast  # the name in Stepper.step's source, which notebook 05 prints
from ftlib.progress import progress_bar

# TrainConfig lives in ftlib.config (importable without torch); Objective, TokenLoss, evaluate_loss, to_device and
# token_loss_sum in ftlib.objective: importable from here too, where the loop's users have always found them
__all__ = ["Objective", "Stepper", "TokenLoss", "TrainConfig", "TrainResult", "TrainingDiverged", "evaluate_loss",
           "lr_lambda", "make_optimizer", "to_device", "token_loss_sum", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is left as it was."""


@dataclass
class TrainResult:
    step: int
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the peak learning rate at each step: linear warmup, then the chosen decay to 0."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1 - progress
        if schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {schedule!r}: use cosine, linear or constant")
    return f


@dataclass
class Stepper:
    """Everything one optimizer step needs, made once per run by :func:`train`."""

    model: torch.nn.Module  # what the optimizer updates (DDP-wrapped when several processes run)
    forward_model: torch.nn.Module  # the same model, torch.compile'd if asked for
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    max_grad_norm: float
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype (None: fp32, no autocast)
    world: int
    out: Path

    def step(self, micro: list[dict], number: int) -> dict:
        """One optimizer step over the micro-batches ``micro`` (on the device): the article's step - forward,
        backward, clip, AdamW, schedule - with the loss *summed* over trained units and divided by the step's units
        over every micro-batch and process, so accumulation and DDP equal one big batch. Returns its metrics."""
        n_units = int(all_reduce_sum([sum(self.objective.units(b) for b in micro)])[0])
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1 or self.world == 1
            with _no_sync(self.model, sync), _autocast(self.device, self.dtype):
                loss, _, metrics = self.objective(self.forward_model, batch)
                # DDP averages gradients over processes; scale so the result is sum / all units.
                (loss * self.world / max(n_units, 1)).backward()
            loss_sum += loss.detach()
            for k, v in metrics.items():
                metric_sums[k] = metric_sums.get(k, 0.0) + float(v)
        step_loss, *metric_values = [v / max(n_units, 1)
                                     for v in all_reduce_sum([float(loss_sum), *metric_sums.values()])]
        if not math.isfinite(step_loss):
            raise TrainingDiverged(
                f"loss became {step_loss} at step {number}; training stopped and the last checkpoint in "
                f"{self.out} is intact. Lower the learning rate or check the data for empty labels.")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": step_loss, "lr": lr, "grad_norm": grad_norm, self.objective.unit: n_units,
                **dict(zip(metric_sums, metric_values))}


def make_optimizer(model, cfg: TrainConfig, total_steps: int) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """AdamW with the article's settings (no weight decay on norms and biases), fused into one kernel on CUDA and
    CPU (as TRL's default; 9-14 % more tokens/s for SmolLM2 full FT, docs/benchmarks.md), and its schedule."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas, eps=1e-8,
                                  fused=device.type in ("cuda", "cpu"))
    return optimizer, LambdaLR(optimizer, lr_lambda(cfg.schedule, cfg.warmup_steps, total_steps))


def train(model, train_loader, config: TrainConfig, eval_loader=None, *, objective: Objective | None = None,
          run_config: dict | None = None) -> TrainResult:
    """Train ``model`` in place on ``objective`` (default: SFT's :class:`TokenLoss`).

    With ``config.resume`` continue from the newest checkpoint in ``output_dir``, after checking that the run there
    was started with the same config (``config.resume_force`` skips the check). ``run_config`` is what the run
    records in ``run_config.json`` and compares on resume (default: ``config`` and the objective's name)."""
    cfg, objective = config, objective or TokenLoss()
    stepper, total_steps, progress = _start(model, train_loader, cfg, objective, run_config)
    # frozen weights in bf16 once (not recast by autocast in every matmul); fp32 again for checkpoints and after
    cast = cfg.cast_frozen and stepper.dtype is not None and stepper.device.type == "cpu" and stepper.world == 1
    frozen = FrozenCast(unwrap(model), stepper.dtype) if cast else None
    stop = {"signal": None}
    handlers = _install_stop_handlers(stop)
    result = TrainResult(step=progress["step"])
    rank = rank_world()[0]
    bar = progress_bar(total=total_steps, initial=progress["step"], desc=objective.name,
                       disable=not cfg.progress or rank != 0)
    log = open(stepper.out / "metrics.jsonl", "a") if rank == 0 else None
    try:
        if frozen:
            frozen.cast()
        batches = _batches_from(train_loader, progress, cfg.seed)
        while progress["step"] < total_steps and stop["signal"] is None:
            t0 = time.perf_counter()
            micro = list(itertools.islice(batches, cfg.grad_accum))
            if len(micro) < cfg.grad_accum:  # epoch finished: start the next one
                progress.update(epoch=progress["epoch"] + 1, batch=0)
                batches = _batches_from(train_loader, progress, cfg.seed)
                continue
            progress["batch"] += len(micro)
            metrics = stepper.step([to_device(b, stepper.device) for b in micro], progress["step"] + 1)
            progress["step"] += 1
            row = _record(stepper, metrics, progress, time.perf_counter() - t0, eval_loader, cfg, total_steps)
            result.history.append(row)
            _report(row, log, bar, objective.unit)
            if cfg.save_every and progress["step"] % cfg.save_every == 0 and progress["step"] < total_steps:
                _save(stepper, progress, frozen)
        if stop["signal"] is not None:
            result.interrupted = True
            tqdm.write(f"{stop['signal']} received: saving a checkpoint at step {progress['step']} before stopping")
        if cfg.save_final or result.interrupted:
            _save(stepper, progress, frozen)
    finally:
        if frozen:
            frozen.restore()
        bar.close()
        if log:
            log.close()
        _restore_handlers(handlers)
    result.step = progress["step"]
    return result


def _start(model, train_loader, cfg: TrainConfig, objective: Objective,
           run_config: dict | None) -> tuple[Stepper, int, dict]:
    """Before the first step: the run record, seeds, the step count, optimizer and schedule, a checkpoint to resume."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    bf16 = cfg.bf16 if cfg.bf16 is not None else train_dtype(device) == torch.bfloat16
    rank, world = rank_world()
    run_config = {"objective": objective.name, **(run_config or asdict(cfg))}
    ckpt = latest_checkpoint(out) if cfg.resume else None
    changed = check_resume(out, run_config, force=cfg.resume_force) if ckpt else {}
    if rank == 0:  # before any step: a run that dies early still says what it was
        write_run_record(out, run_record(run_config, changed))
    torch.manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        unwrap(model).gradient_checkpointing_enable()
    objective.prepare(model)
    model.train()
    total_steps = cfg.max_steps or len(train_loader) // cfg.grad_accum * cfg.epochs
    if not cfg.max_steps:  # shards may differ by a batch: every process must stop at the same step
        total_steps = all_reduce_min(total_steps)
    if total_steps <= 0:
        raise ValueError(f"nothing to train: {len(train_loader)} batches with grad_accum={cfg.grad_accum}")
    optimizer, scheduler = make_optimizer(model, cfg, total_steps)
    progress = {"step": 0, "epoch": 0, "batch": 0}
    if ckpt:
        progress = load_checkpoint(ckpt, model, optimizer, scheduler)
    stepper = Stepper(model, torch.compile(model) if cfg.compile else model, objective, optimizer, scheduler,
                      cfg.max_grad_norm, device, torch.bfloat16 if bf16 else None, world, out)
    return stepper, total_steps, progress


def _record(stepper: Stepper, metrics: dict, progress: dict, seconds: float, eval_loader, cfg: TrainConfig,
            total_steps: int) -> dict:
    """The metrics row of a step: its numbers and time, and the held-out metrics when an evaluation is due."""
    unit = stepper.objective.unit
    row = {"step": progress["step"], "epoch": progress["epoch"], **metrics, "seconds": seconds,
           f"{unit}_per_s": metrics[unit] / seconds}
    due = (cfg.eval_every and progress["step"] % cfg.eval_every == 0) or progress["step"] == total_steps
    if eval_loader is not None and due:
        evaluated = stepper.objective.evaluate(stepper.model, eval_loader, stepper.dtype)
        row.update({f"eval_{k}": v for k, v in evaluated.items()})
        stepper.model.train()
    return row


def _report(row: dict, log, bar, unit: str) -> None:
    """One JSON line in metrics.jsonl and the progress bar's numbers."""
    if log:
        log.write(json.dumps(row) + "\n")
        log.flush()
    bar.set_postfix({"loss": f"{row['loss']:.3f}", "lr": f"{row['lr']:.1e}",
                     f"{unit}/s": f"{row[unit] / row['seconds']:.0f}"})
    bar.update(1)


def _save(stepper: Stepper, progress: dict, frozen: FrozenCast | None = None) -> None:
    with frozen.original() if frozen else contextlib.nullcontext():  # checkpoints hold the fp32 weights
        # every process: rank 0 writes
        save_checkpoint(stepper.out, stepper.model, stepper.optimizer, stepper.scheduler, dict(progress))
    barrier()


def _batches_from(loader, progress: dict, seed: int):
    """An iterator over the loader for ``progress['epoch']``, fast-forwarded past batches already trained on.

    Exact resume needs an epoch's batches to depend only on (seed, epoch), never on how many epochs this process
    has iterated. ftlib's loaders (``make_dataloader``) promise that through ``batch_sampler.set_epoch`` (see
    ``ftlib.batching``), torch's ``DistributedSampler`` through ``sampler.set_epoch``; a plain shuffling
    ``DataLoader`` gets it from its ``generator``, reseeded here with ``seed + epoch``."""
    epoch = progress["epoch"]
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed + epoch)
    return itertools.islice(iter(loader), progress["batch"], None)


def _no_sync(model, sync: bool):
    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()  # skip the gradient all-reduce on all but the last micro-batch
    return contextlib.nullcontext()


def _install_stop_handlers(stop: dict) -> dict:
    """SIGINT/SIGTERM finish the current step, save a checkpoint and return (only in the main thread)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, lambda s, _f: stop.update(signal=signal.Signals(s).name))
    return previous


def _restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
