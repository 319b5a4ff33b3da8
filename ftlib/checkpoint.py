"""Checkpoints that survive a crash: written to a temp directory, then renamed into place.

A checkpoint holds everything needed to continue *exactly*: model weights (safetensors), optimizer and
scheduler state, every RNG state and the position in the data. ``latest`` is a small file naming the newest
complete checkpoint; it is replaced atomically too, so a kill at any moment leaves the previous checkpoint
usable. No pickles: tensors go through safetensors, the rest through ``torch.load(weights_only=True)``.

Several processes: every process calls the save functions; only rank 0 writes. With FSDP2 each process holds a
shard of every weight, so saving first gathers whole tensors (a collective: hence every process calls it) and
loading gives each process its shard back; the files are the same as a single process would write.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from ftlib.distributed import rank

WEIGHTS = "model.safetensors"
LATEST = "latest"
STATE = "trainer_state.pt"


def rng_state() -> dict:
    """All the RNG states a training step can consume, in a form ``weights_only`` loading accepts."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_dir(final: Path) -> Path:
    """A fresh temp directory beside ``final``; pass it to :func:`commit_dir` once fully written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def commit_dir(tmp: Path, final: Path) -> None:
    """Move a completely written directory into place (replacing an older one of the same name)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def is_sharded(model) -> bool:
    """True for an FSDP2 model: its parameters are DTensors, each process holding a slice."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _full_state(model, optimizer=None) -> tuple[dict, dict | None]:
    """Whole CPU tensors of a sharded model (and optimizer), on every process; tied weights kept once."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        weights, optim = get_model_state_dict(model, options=options), None
    else:
        weights, optim = get_state_dict(model, optimizer, options=options)
    keep = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    return {k: v.contiguous() for k, v in weights.items() if k in keep}, optim


def save_checkpoint(output_dir: Path, model, optimizer, scheduler, progress: dict, keep: int = 2) -> Path:
    """Write ``checkpoint-<step>`` atomically, point ``latest`` at it, and keep the newest ``keep``.

    Call it on every process: rank 0 writes (after gathering the shards of an FSDP model)."""
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{progress['step']}"
    sharded = is_sharded(model)
    weights, optim = _full_state(model, optimizer) if sharded else (None, None)
    if rank() != 0:
        return final
    optim = optim if sharded else optimizer.state_dict()
    tmp = atomic_dir(final)
    try:
        if sharded:
            save_file(weights, str(tmp / WEIGHTS))
        else:
            save_model(unwrap(model), str(tmp / WEIGHTS))  # handles tied weights; works for PEFT models too
        torch.save({"optimizer": optim, "scheduler": scheduler.state_dict(),
                    "rng": rng_state(), "progress": progress}, tmp / STATE)
        (tmp / "progress.json").write_text(json.dumps(progress, indent=1))
        commit_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_text_atomic(output_dir / LATEST, final.name)
    for old in sorted(output_dir.glob("checkpoint-*"), key=_step_of)[:-keep]:
        if old.name != final.name and not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest *complete* checkpoint, or None."""
    pointer = Path(output_dir) / LATEST
    if not pointer.exists():
        return None
    path = Path(output_dir) / pointer.read_text().strip()
    return path if (path / STATE).exists() else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG states; returns the saved progress (step, epoch, batch)."""
    state_file = Path(path) / STATE
    state = torch.load(state_file, weights_only=True)
    if is_sharded(model):  # every process reads the whole files and keeps its shard
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=load_file(str(Path(path) / WEIGHTS)),
                       optim_state_dict=state["optimizer"], options=StateDictOptions(full_state_dict=True))
    else:
        load_weights(path, model)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["progress"]


def load_weights(path: Path, model) -> None:
    """Load only the model weights of a checkpoint (e.g. to evaluate it), refusing a mismatched model."""
    missing, unexpected = load_model(unwrap(model), str(Path(path) / WEIGHTS), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")


def directory_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (to compare a LoRA adapter with a merged model on disk)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def unwrap(model):
    """The plain model inside a DDP/compile wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-")[1].split(".")[0])
    except (IndexError, ValueError):
        return -1


def save_finetuned(model, tokenizer, output_dir: str | Path, chat_template: str | None = None) -> Path:
    """Save a model directory that ``from_pretrained`` and ``ftlib.chat`` load directly (safetensors).

    LoRA adapters are merged first, so the result is a plain model. ``chat_template`` records the template the
    model was trained with (e.g. the article's); it is saved with the tokenizer. Written atomically, by rank 0
    only when several processes run (call it on every process: an FSDP model's shards are gathered first).
    """
    final = Path(output_dir)
    weights = _full_state(model)[0] if is_sharded(model) else None
    if rank() != 0:
        return final
    model = unwrap(model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    callers_template = tokenizer.chat_template  # saved with the given template; the caller's tokenizer keeps its own
    tmp = atomic_dir(final)
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(tmp)
        commit_dir(tmp, final)
    finally:
        tokenizer.chat_template = callers_template
        shutil.rmtree(tmp, ignore_errors=True)
    return final
