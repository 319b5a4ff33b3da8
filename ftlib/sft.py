"""`python -m ftlib.sft`: supervised fine-tuning from a YAML config and/or flags.

    python -m ftlib.sft --config configs/sft-chat.yaml          # notebook 05's run (its profiles: block per profile)
    python -m ftlib.sft --config configs/sft-identity.yaml
    python -m ftlib.sft --model instruct --dataset identity --max-steps 40 --output-dir outputs/sft-identity
    torchrun --nproc_per_node 2 -m ftlib.sft --config ...      # DDP (gloo on CPU, NCCL on GPUs)
    accelerate launch -m ftlib.sft --config ...                # the same, through accelerate's launcher

The steps are the ones notebook 05 walks through: load the model, turn records into samples with labels,
batch them (packed by default), run ``ftlib.train.train``, save a Hugging Face model directory. Flags and YAML
are checked when the config is made, before torch is imported (a bad value is answered in a fraction of a second);
the data is read and checked next, and tokenised before the model loads, so a bad file is answered in seconds.
Either way: one line (``error: ...``) and exit code 2. The modules only training needs are imported inside ``run``.
``--resume`` continues only the run that ``<output_dir>/run_config.json`` recorded (``--resume-force`` overrides).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ftlib import data as ftdata
from ftlib.config import ConfigError, TrainConfig, option, validate
from ftlib.config_file import parse_config_file
from ftlib.mixture import MixtureConfig
from ftlib.profiles import PROFILES, activate
from ftlib.samples import pad_token_id, tokenise_dataset
from ftlib.schema import DataError
from ftlib.templates import ARTICLE_CHAT_TEMPLATE

if TYPE_CHECKING:
    import datasets

Format = Literal["auto", "alpaca", "alpaca-article", "chat", "article-chat"]
FORMATS = typing.get_args(Format)
# ConfigError comes from ftlib.config
__all__ = ["ConfigError", "SFTConfig", "load_config", "main", "parse_config", "prepare_samples", "run"]


@dataclass
class SFTConfig:
    """What ``python -m ftlib.sft`` runs: model, data, lengths, batching, LoRA/FSDP, and the loop's TrainConfig."""

    model: str = option("instruct", "a role (instruct, base), an offline asset, a local directory or a hub id")
    profile: str | None = option(None, f"one of {', '.join(PROFILES)}; default: $FTLIB_PROFILE or offline")
    dataset: str = option("alpaca", "alpaca, identity, chat, mixture (notebook 05's: see mixture), or the path "
                                    "of a .json/.jsonl file")
    format: Format = option("auto", "alpaca / alpaca-article prompts, or chat (the tokenizer's template) / "
                                    "article-chat; auto: chat when the tokenizer has a template or the data is chats")
    identity_name: str = option("Ada", "the name the identity dataset teaches")
    identity_author: str = option("the ftlib course", "the author the identity dataset teaches")
    limit: int | None = option(None, "use only the first N records", ge=1)
    eval_fraction: float = option(0.05, "share of the records held out for the eval loss", ge=0, lt=1)
    max_length: int = option(512, "tokens per sample (packed: per row)", ge=2)
    overlong: Literal["truncate", "drop"] = option("truncate", "a sample longer than max_length: cut it, or drop it "
                                                               "(no answer is trained without its end)")
    strategy: Literal["pad", "dynamic", "packed"] = option("packed", "how samples become batches")
    batch_size: int = option(4, "rows per process; the global batch is batch_size x processes (x grad_accum)", ge=1)
    train_on_prompt: bool = option(False, "train on the prompt tokens too")
    lora: bool = option(False, "train LoRA adapters (merged into the saved model)")
    lora_r: int = option(16, "LoRA rank", ge=1)
    lora_alpha: int = option(32, "LoRA alpha (scale alpha / r)", ge=1)
    fsdp: bool = option(False, "shard the model over the processes (FSDP2) instead of replicating it (DDP)")
    mixture: MixtureConfig = dataclasses.field(default_factory=MixtureConfig)  # dataset: mixture only (YAML)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)
        if self.profile is not None and self.profile not in PROFILES:
            raise ConfigError(f"profile {self.profile!r}: choose one of {', '.join(PROFILES)}")
        if self.lora and self.fsdp:
            raise ConfigError("lora and fsdp together are not supported: a LoRA run keeps the base model frozen "
                              "and small enough to replicate, so drop --fsdp (DDP is used) or drop --lora")


def load_records(cfg: SFTConfig, verbose: bool = True) -> datasets.Dataset:
    """The dataset named in the config, normalised (instruction/input/output or messages). A file is checked
    record by record (``ftlib.data.load_file``): bad records are dropped and, if ``verbose``, listed. The mixture
    brings its own held-out eval records (column ``split``: train / eval)."""
    if cfg.dataset == "mixture":
        import datasets

        from ftlib.mixture import build_mixture

        mix = build_mixture(cfg.mixture, cfg.profile, name=cfg.identity_name, author=cfg.identity_author)
        train = mix.train.remove_columns("source").add_column("split", ["train"] * len(mix.train))
        return datasets.concatenate_datasets([train, mix.eval.add_column("split", ["eval"] * len(mix.eval))])
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
        raise DataError(f"dataset {cfg.dataset!r}: no such file; use alpaca, identity, chat, mixture or the path "
                        "of a .json/.jsonl file")
    return ds.select(range(min(cfg.limit, len(ds)))) if cfg.limit else ds


def prepare_samples(cfg: SFTConfig, tokenizer, records: datasets.Dataset):
    """Tokenised train/eval splits with labels, the chat template the model is trained with, and the report."""
    fmt = cfg.format  # one of FORMATS: SFTConfig checked it
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
    if "split" in records.column_names:  # held out by the data itself (the mixture)
        split = {part: records.filter(lambda r, p=part: r["split"] == p).remove_columns("split")
                 for part in ("train", "eval")}
        split["test"] = split.pop("eval")
    elif cfg.eval_fraction and len(records) - math.ceil(cfg.eval_fraction * len(records)) < 1:
        raise DataError(f"{cfg.dataset}: {len(records)} usable record(s) leave none to train on after holding out "
                        f"eval_fraction={cfg.eval_fraction}; add records or pass --eval-fraction 0")
    else:
        split = (records.train_test_split(test_size=cfg.eval_fraction, seed=cfg.train.seed) if cfg.eval_fraction
                 else None)
    kw = dict(style=style, chat_template=template, train_on_prompt=cfg.train_on_prompt, max_length=cfg.max_length,
              overlong=cfg.overlong, on_error="skip")
    train_tok, report = tokenise_dataset(split["train"] if split else records, tokenizer, **kw)
    eval_tok = tokenise_dataset(split["test"], tokenizer, **kw)[0] if split and len(split["test"]) else None
    return train_tok, eval_tok, template or tokenizer.chat_template, report


def run(cfg: SFTConfig) -> Path:
    """Fine-tune as configured; returns the saved model directory (``<output_dir>/final``)."""
    import torch

    from ftlib.checkpoint import latest_checkpoint
    from ftlib.config import check_resume
    from ftlib.distributed import RankSlice, cleanup, init_distributed, wrap_model
    from ftlib.train import TokenLoss, train

    rank, world, device = init_distributed()
    record = dataclasses.asdict(cfg)  # resolved: the profile's name, not "default"
    record["profile"] = _config_step("profile", activate, cfg.profile).name  # the run's profile, from here on
    if cfg.train.resume and latest_checkpoint(cfg.train.output_dir):  # a run that cannot continue stops early
        check_resume(cfg.train.output_dir, {"objective": TokenLoss.name, **record}, force=cfg.train.resume_force)
    torch.manual_seed(cfg.train.seed)
    records = load_records(cfg, verbose=rank == 0)  # bad data fails here, before anything heavy is loaded
    import datasets

    datasets.disable_progress_bars()  # sub-second map bars; stderr stays for the training bar and errors
    from ftlib.batching import make_dataloader
    from ftlib.checkpoint import save_finetuned
    from ftlib.models import load_model, load_tokenizer

    model_step = f"profile {record['profile']!r}: model {cfg.model!r}"  # a hub error names the profile, as data's do
    tokenizer = _config_step(model_step, load_tokenizer, cfg.model, cfg.profile)
    train_tok, eval_tok, template, report = prepare_samples(cfg, tokenizer, records)
    if rank == 0:
        print(report)
    if not len(train_tok):
        reason = next(iter(report.dropped.values()), "it has no records")
        raise DataError(f"{cfg.dataset}: no record is left to train on after tokenising with max_length="
                        f"{cfg.max_length}, e.g. {reason}; raise --max-length or shorten the responses")
    model = _config_step(model_step, load_model, cfg.model, cfg.profile, dtype=torch.float32, device=device)[0]
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
    train(model, loader, cfg.train, eval_loader=eval_loader, run_config=record)
    final = Path(cfg.train.output_dir) / "final"
    save_finetuned(model, tokenizer, final, chat_template=template)  # every process: rank 0 writes
    if rank == 0:
        print(f"saved {final}")
    cleanup()
    return final


def parse_config(argv: list[str] | None = None) -> SFTConfig:
    """YAML (``--config``) first, then flags on top. Train settings may sit under a ``train:`` key or at top level.

    A bad key, flag or value raises ConfigError with a one-line message (``main`` prints it and returns 2)."""
    return parse_config_file(SFTConfig, argv, flatten="train", prog="python -m ftlib.sft",
                             description=__doc__.splitlines()[0])


def load_config(path: str | Path, profile: str | None = None) -> SFTConfig:
    """The config a YAML file gives under ``profile`` (its ``profiles:`` block on top): what a notebook runs, read
    from the same file as ``python -m ftlib.sft --config`` reads. A bad key or value raises ConfigError."""
    return parse_config(["--config", str(path)] + (["--profile", profile] if profile else []))


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
