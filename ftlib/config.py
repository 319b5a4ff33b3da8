"""Configs that fail fast and travel with the run.

A bad value should be answered when the config is *made*, in one line naming the key and what it accepts, not
an hour later inside the training loop. Every config dataclass here (and ``SFTConfig``, ``DPOConfig``) calls
:func:`validate` in ``__post_init__``: the type hints are the contract (``Literal`` choices, ``int``, ``float``,
``bool``, ``X | None``, fixed-length tuples) and ``option(..., ge=/gt=/le=/lt=)`` adds ranges. The help text of
the command line comes from the same fields (``option(help=...)``).

A run records itself: :func:`write_run_record` writes the resolved config, the library versions and the git
commit to ``<output_dir>/run_config.json`` when training starts, and :func:`check_resume` refuses to continue a
run from a checkpoint under a different config (``force=True``, the CLI's ``--resume-force``, overrides).

No torch import here: ``python -m ftlib.sft`` checks its flags before anything heavy loads.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import types
import typing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

RUN_RECORD = "run_config.json"
# Settings a resumed run may change: they decide what is shown and saved, not what is learned.
RESUME_MAY_CHANGE = frozenset({"resume", "resume_force", "progress", "save_every", "save_final", "eval_every"})


class ConfigError(ValueError):
    """A config value that cannot work (unknown key, choice or range); the message is one line with the fix."""


def option(default: Any, help: str, **limits: float) -> Any:
    """A dataclass field with its help text and optional bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    unknown = set(limits) - {"ge", "gt", "le", "lt"}
    if unknown:
        raise TypeError(f"option() takes ge, gt, le, lt as limits, not {sorted(unknown)}")
    return dataclasses.field(default=default, metadata={"help": help, **limits})


_LIMITS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def validate(config: Any) -> None:
    """Check every field of a config dataclass against its type hint and bounds, normalising on the way (int ->
    float, list -> tuple, Path -> str); raise ConfigError naming the first bad key."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = _conform(f.name, getattr(config, f.name), hints[f.name])
        for limit, (ok, sign) in _LIMITS.items():
            bound = f.metadata.get(limit)
            values = value if isinstance(value, tuple) else (value,)
            if bound is not None and any(v is not None and not ok(v, bound) for v in values):
                raise ConfigError(f"{f.name}={_show(value)}: must be {sign} {bound}")
        object.__setattr__(config, f.name, value)  # works for frozen dataclasses too


def _conform(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` asks for, or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]  # ftlib's configs use X | None only
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} {_show(value)}: choose one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name}={_show(value)}: expected {len(args)} values, e.g. {name}: [0.9, 0.99]")
        return tuple(_conform(name, v, a) for v, a in zip(value, args))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            try:
                return hint(**value)
            except TypeError as e:  # an unknown key inside the nested config
                raise ConfigError(f"{name}: {e}") from None
        if not isinstance(value, hint):
            raise ConfigError(f"{name}: expected {hint.__name__} settings, got {type(value).__name__}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={_show(value)}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={_show(value)}: expected a whole number")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}={_show(value)}: expected a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={_show(value)}: expected a number")
        return float(value)
    if hint is str:
        if isinstance(value, os.PathLike):  # output_dir=Path(...)
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{name}={_show(value)}: expected text")
        return value
    return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


# ---------------------------------------------------------------- the training loop's settings
@dataclass
class TrainConfig:
    """Settings of ``ftlib.train.train``: optimizer, schedule, steps, checkpoints. Checked when made."""

    output_dir: str = option("outputs/sft", "where metrics.jsonl, run_config.json and checkpoints go")
    learning_rate: float = option(1e-4, "peak learning rate", gt=0)
    weight_decay: float = option(0.1, "AdamW weight decay (not on norms and biases); the article's value", ge=0)
    betas: tuple[float, float] = option((0.9, 0.99), "AdamW betas (the article's)", ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", "decay after warmup")
    warmup_steps: int = option(0, "linear warmup steps", ge=0)
    epochs: int = option(1, "passes over the data (unless max_steps is set)", ge=1)
    max_steps: int | None = option(None, "optimizer steps; overrides epochs when set", ge=1)
    grad_accum: int = option(1, "micro-batches per optimizer step", ge=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm", gt=0)
    eval_every: int = option(0, "steps between evaluations; 0: only at the end (with an eval loader)", ge=0)
    save_every: int = option(0, "steps between checkpoints; 0: only at the end", ge=0)
    save_final: bool = option(True, "a resumable checkpoint at the end (model + optimizer: ~3x the weights); "
                                    "a SIGINT/SIGTERM stop always saves")
    resume: bool = option(False, "continue from the newest checkpoint in output_dir (same config only)")
    resume_force: bool = option(False, "resume even if the config differs from the recorded one (implies --resume)")
    seed: int = option(0, "seeds the model init RNG and every epoch's shuffle")
    bf16: bool | None = option(None, "bf16 autocast; default: on CUDA and on CPUs with native bf16")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    compile: bool = option(False, "torch.compile the model")
    cast_frozen: bool = option(True, "under bf16 autocast on a CPU (one process), hold frozen linear weights (LoRA's "
                                     "base model) in bf16: cast once, not in every matmul (ftlib.frozen)")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)
        self.resume = self.resume or self.resume_force  # forcing a resume is resuming


# ---------------------------------------------------------------- the run record
def run_record(config: dict, changed_on_resume: dict | None = None) -> dict:
    """What ``run_config.json`` holds: the config, library versions, the git commit of the code, the start time."""
    versions = {"python": platform.python_version()}
    for package in ("ftlib", "torch", "transformers", "peft", "datasets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    record = {"config": _plain(config), "versions": versions, "git_commit": _git_commit(),
              "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if changed_on_resume:
        record["changed_on_resume"] = changed_on_resume
    return record


def write_run_record(output_dir: str | Path, record: dict) -> Path:
    """Write ``run_config.json`` atomically (a crash leaves the old file or the new one, never half of one)."""
    path = Path(output_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_RECORD}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_run_record(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / RUN_RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{path}: unreadable run record; delete it to resume without the config check") from None


def check_resume(output_dir: str | Path, config: dict, force: bool = False) -> dict:
    """Compare ``config`` with the one ``output_dir``'s run recorded; returns ``{key: [recorded, now]}``.

    A difference is a ConfigError unless ``force``: a resumed run must continue the run it resumes (same data,
    model, schedule), or its checkpoints and metrics describe neither. A directory without a record passes."""
    recorded = read_run_record(output_dir)
    if recorded is None:
        return {}
    changes = _differences(recorded.get("config", {}), _plain(config))
    if changes and not force:
        shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in list(changes.items())[:4])
        more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
        raise ConfigError(f"{output_dir} was started with a different config ({shown}{more}); resume with the "
                          "recorded settings (run_config.json) or pass --resume-force to continue anyway")
    return changes


def _differences(old: dict, new: dict, prefix: str = "") -> dict:
    changes = {}
    for key in sorted(set(old) | set(new)):
        if key in RESUME_MAY_CHANGE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            changes[f"{prefix}{key}"] = [a, b]
    return changes


def _plain(config: dict) -> dict:
    """JSON types only (tuples become lists), so a config compares equal to its own record."""
    return json.loads(json.dumps(config, default=str))


def _git_commit() -> str | None:
    """The commit of the checkout ftlib runs from (``+dirty`` with uncommitted changes), or None."""
    where = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if not commit:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
