"""`python -m ftlib.sft`: supervised fine-tuning from a YAML config and/or flags.

    python -m ftlib.sft --config configs/sft-identity.yaml
    python -m ftlib.sft --model instruct --dataset identity --max-steps 40 --output-dir outputs/sft-identity
    torchrun --nproc_per_node 2 -m ftlib.sft --config ...      # DDP (gloo on CPU, NCCL on GPUs)
    accelerate launch -m ftlib.sft --config ...                # the same, through accelerate's launcher

The steps are the ones notebook 05 walks through: load the model, turn records into samples with labels,
batch them (packed by default), run ``ftlib.train.train``, save a Hugging Face model directory. The data is read
and checked first, and tokenised before the model loads, so a bad file or flag is answered in seconds with one
line (``error: ...``, exit code 2); the modules only training needs are imported inside ``run`` for the same reason.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from ftlib import data as ftdata
from ftlib.data import DataError
from ftlib.samples import pad_token_id, tokenise_dataset
from ftlib.templates import ARTICLE_CHAT_TEMPLATE
from ftlib.train import TrainConfig, train

if TYPE_CHECKING:
    import datasets

FORMATS = ("auto", "alpaca", "alpaca-article", "chat", "article-chat")


class ConfigError(ValueError):
    """A config value that cannot work (unknown key, format or model); the message is one line with the fix."""


@dataclass
class SFTConfig:
    model: str = "instruct"  # role, offline asset, local directory or hub id
    profile: str | None = None  # default: $FTLIB_PROFILE or offline
    dataset: str = "alpaca"  # alpaca | identity | chat | path to a .json/.jsonl file
    format: str = "auto"  # alpaca / alpaca-article prompts, or chat (the tokenizer's template) / article-chat
    identity_name: str = "Ada"
    identity_author: str = "the ftlib course"
    limit: int | None = None  # use only the first N records
    eval_fraction: float = 0.05
    max_length: int = 512
    strategy: str = "packed"  # pad | dynamic | packed
    batch_size: int = 4  # per process; the global batch is batch_size x processes (x grad_accum steps)
    train_on_prompt: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    fsdp: bool = False
    resume: bool = False
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def load_records(cfg: SFTConfig, verbose: bool = True) -> datasets.Dataset:
    """The dataset named in the config, normalised (instruction/input/output or messages). A file is checked
    record by record (``ftlib.data.load_file``): bad records are dropped and, if ``verbose``, listed."""
    if cfg.dataset == "alpaca":
        ds = ftdata.load_instructions(cfg.profile)
    elif cfg.dataset == "identity":
        ds = ftdata.load_identity(cfg.identity_name, cfg.identity_author, cfg.profile)
    elif cfg.dataset == "chat":
        ds = ftdata.load_chats(cfg.profile)
    elif Path(cfg.dataset).exists():
        ds, report = ftdata.load_file(cfg.dataset, limit=cfg.limit)
        if verbose and report.dropped:
            print(report)
        return ds
    else:
        raise DataError(f"dataset {cfg.dataset!r}: no such file; use alpaca, identity, chat or the path of a "
                        ".json/.jsonl file")
    return ds.select(range(min(cfg.limit, len(ds)))) if cfg.limit else ds


def prepare_samples(cfg: SFTConfig, tokenizer, records: datasets.Dataset):
    """Tokenised train/eval splits with labels, the chat template the model is trained with, and the report."""
    fmt = cfg.format
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    is_chat_data = "messages" in records.column_names
    if fmt == "auto":
        fmt = "chat" if (tokenizer.chat_template or is_chat_data) else "alpaca"
    template = None
    if fmt in ("chat", "article-chat"):
        template = ARTICLE_CHAT_TEMPLATE if fmt == "article-chat" or not tokenizer.chat_template else None
        if not is_chat_data:
            records = ftdata.instructions_to_chats(records)
    elif is_chat_data:
        raise DataError(f"{cfg.dataset}: format {fmt!r} needs instruction records, but it holds chats; "
                        "use --format chat")
    style = "article" if fmt == "alpaca-article" else "alpaca"
    if cfg.eval_fraction and len(records) - math.ceil(cfg.eval_fraction * len(records)) < 1:
        raise DataError(f"{cfg.dataset}: {len(records)} usable record(s) leave none to train on after holding out "
                        f"eval_fraction={cfg.eval_fraction}; add records or pass --eval-fraction 0")
    split = records.train_test_split(test_size=cfg.eval_fraction, seed=cfg.train.seed) if cfg.eval_fraction else None
    kw = dict(style=style, chat_template=template, train_on_prompt=cfg.train_on_prompt, max_length=cfg.max_length,
              overlong="truncate", on_error="skip")
    train_tok, report = tokenise_dataset(split["train"] if split else records, tokenizer, **kw)
    eval_tok = tokenise_dataset(split["test"], tokenizer, **kw)[0] if split else None
    return train_tok, eval_tok, template or tokenizer.chat_template, report


def run(cfg: SFTConfig) -> Path:
    """Fine-tune as configured; returns the saved model directory (``<output_dir>/final``)."""
    from ftlib.distributed import RankSlice, cleanup, init_distributed, wrap_model

    rank, world, device = init_distributed()
    torch.manual_seed(cfg.train.seed)
    records = load_records(cfg, verbose=rank == 0)  # bad data fails here, before anything heavy is loaded
    import datasets

    datasets.disable_progress_bars()  # sub-second map bars; stderr stays for the training bar and errors
    from ftlib.batching import make_dataloader
    from ftlib.checkpoint import save_finetuned
    from ftlib.models import load_model, load_tokenizer

    tokenizer = _config_step(f"model {cfg.model!r}", load_tokenizer, cfg.model, cfg.profile)
    train_tok, eval_tok, template, report = prepare_samples(cfg, tokenizer, records)
    if rank == 0:
        print(report)
    if not len(train_tok):
        reason = next(iter(report.dropped.values()), "it has no records")
        raise DataError(f"{cfg.dataset}: no record is left to train on after tokenising with max_length="
                        f"{cfg.max_length}, e.g. {reason}; raise --max-length or shorten the responses")
    model = _config_step(f"model {cfg.model!r}", load_model, cfg.model, cfg.profile, dtype=torch.float32,
                         device=device)[0]
    pad = pad_token_id(tokenizer)
    # every process builds the same loader of *global* batches and trains on its block of rows of each
    loader = make_dataloader(train_tok, cfg.strategy, cfg.batch_size * world, cfg.max_length, shuffle=True,
                             seed=cfg.train.seed, pad_token_id=pad)
    if world > 1:
        loader = RankSlice(loader, rank, world)
    eval_loader = (make_dataloader(eval_tok, "dynamic", cfg.batch_size, cfg.max_length, shuffle=False,
                                   pad_token_id=pad) if eval_tok is not None and len(eval_tok) else None)
    if cfg.lora:
        from ftlib.lora import add_lora

        model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha)
    model = wrap_model(model, device, fsdp=cfg.fsdp)
    train(model, loader, cfg.train, eval_loader=eval_loader, resume=cfg.resume)
    final = Path(cfg.train.output_dir) / "final"
    save_finetuned(model, tokenizer, final, chat_template=template)  # every process: rank 0 writes
    if rank == 0:
        print(f"saved {final}")
    cleanup()
    return final


def _read_yaml(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SystemExit(f"config {path}: cannot be read ({e.strerror}); check the --config path") from None
    except yaml.YAMLError as e:
        where = f" at line {e.problem_mark.line + 1}" if getattr(e, "problem_mark", None) else ""
        raise SystemExit(f"config {path}: not valid YAML{where}; fix the file there") from None
    if values is not None and not isinstance(values, dict):
        raise SystemExit(f"config {path}: expected key: value pairs, got a {type(values).__name__}")
    return values or {}


def parse_config(argv: list[str] | None = None) -> SFTConfig:
    """YAML (``--config``) first, then flags on top. Train settings may sit under a ``train:`` key or at top level."""
    parser = argparse.ArgumentParser(prog="python -m ftlib.sft", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with SFTConfig / TrainConfig keys")
    for f in [*fields(SFTConfig), *fields(TrainConfig)]:
        if f.name == "train":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool) or f.type == "bool | None":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=None)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)
    args = vars(parser.parse_args(argv))
    values = _read_yaml(Path(args.pop("config"))) if args.get("config") else {}
    values.update(values.pop("train", {}) or {})
    values.update({k: v for k, v in args.items() if v is not None and k != "config"})
    train_names = {f.name for f in fields(TrainConfig)}
    sft_names = {f.name for f in fields(SFTConfig)} - {"train"}
    unknown = set(values) - train_names - sft_names
    if unknown:
        raise SystemExit(f"unknown config keys: {', '.join(sorted(unknown))}")
    if values.get("lora") and values.get("fsdp"):
        raise SystemExit("lora and fsdp together are not supported: a LoRA run keeps the base model frozen and "
                         "small enough to replicate, so drop --fsdp (DDP is used) or drop --lora")
    if values.get("format", "auto") not in FORMATS:
        raise SystemExit(f"format {values['format']!r}: choose one of {', '.join(FORMATS)}")
    tcfg = TrainConfig(**{k: v for k, v in values.items() if k in train_names})
    if isinstance(tcfg.betas, list):
        tcfg.betas = tuple(tcfg.betas)
    return SFTConfig(train=tcfg, **{k: v for k, v in values.items() if k in sft_names})


def _config_step(what: str, fn, *args, **kwargs):
    """``fn(...)``, its ValueError/OSError (a bad model name or directory) turned into a one-line ConfigError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError) as e:
        raise ConfigError(f"{what}: {' '.join(str(e).split())}") from e


def main(argv: list[str] | None = None) -> int:
    """The CLI: bad data or config is one line on stderr (``error: ...``) and exit code 2, never a traceback."""
    try:
        cfg = parse_config(argv)
        print(json.dumps(dataclasses.asdict(cfg), indent=1, default=str))
        run(cfg)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # parse_config's config errors carry their one-line message as the exit code
        if not isinstance(e.code, str):
            raise
        print(f"error: {e.code}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
