"""A config from a YAML file and flags: what ``python -m ftlib.sft --config ...`` and a notebook's ``load_config`` read.

The file's keys come first, its ``profiles: {<profile>: {...}}`` block on top, then the flags on top of both. Every
problem (a file that cannot be read, bad YAML, an unknown key, a bad flag, a value the config refuses) is a
:class:`~ftlib.config.ConfigError` with a one-line message naming the fix; ``--help`` prints and exits 0 as usual.
No torch import here: a bad flag is answered before anything heavy loads.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Literal, TypeVar

import yaml

from ftlib.config import ConfigError
from ftlib.profiles import PROFILES, profile_name

Config = TypeVar("Config")


def read_yaml(path: Path) -> dict:
    """The file's ``key: value`` pairs (``{}`` for an empty file)."""
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"config {path}: cannot be read ({e.strerror}); check the --config path") from None
    except yaml.YAMLError as e:
        where = f" at line {e.problem_mark.line + 1}" if getattr(e, "problem_mark", None) else ""
        raise ConfigError(f"config {path}: not valid YAML{where}; fix the file there") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"config {path}: expected key: value pairs, got a {type(values).__name__}")
    return values or {}


class ConfigArgumentParser(argparse.ArgumentParser):
    """argparse with one flag per config field (type, default and help from the dataclass field) and one-line
    errors (a ConfigError, no usage dump).

    The conventions are transformers' ``HfArgumentParser``'s: ``--max-steps`` or ``--max_steps``, the help text
    from ``field.metadata["help"]``, ``Literal`` choices shown; plus ``--x``/``--no-x`` for every bool and N values
    for an N-tuple. Not HfArgumentParser itself: importing transformers takes most of a second, and a bad flag
    should be answered before anything heavy loads (this parser answers in about 0.2 s). A ``Literal`` value is
    checked by the config, so flags, YAML and Python get the same message."""

    def __init__(self, *configs: type, **kwargs):
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)
        for config in configs:
            self.add_config(config)

    def add_config(self, config: type) -> None:
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                continue  # a nested config (SFTConfig.train) adds its own fields
            if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
                (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
            names = list(dict.fromkeys([f"--{f.name.replace('_', '-')}", f"--{f.name}"]))
            kwargs = {"default": f.default, "help": f.metadata.get("help")}
            origin, args = typing.get_origin(hint), typing.get_args(hint)
            if hint is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif origin is tuple:
                kwargs.update(type=args[0], nargs=len(args))
            elif origin is Literal:
                kwargs["metavar"] = "{" + ",".join(map(str, args)) + "}"
            else:
                kwargs["type"] = hint
            self.add_argument(*names, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        """argparse's answer to a bad flag, as a ConfigError (its ``--help`` still exits through SystemExit(0))."""
        raise ConfigError(message)


def parse_config_file(config: type[Config], argv: list[str] | None, *, flatten: str, prog: str,
                      description: str) -> Config:
    """``config`` made from YAML (``--config``) with its profile's block, then flags on top. The fields of the
    nested config ``flatten`` (e.g. ``train``) are flags of their own and may sit at the YAML's top level too.

    ``config`` needs a ``profile`` field: it records the profile resolved here (--profile, else the YAML's
    ``profile`` key, else $FTLIB_PROFILE, else offline). Raises ConfigError with a one-line message."""
    nested = typing.get_type_hints(config)[flatten]
    parser = ConfigArgumentParser(config, nested, prog=prog, description=description)
    parser.add_argument("--config", help=f"YAML file with {config.__name__} / {nested.__name__} keys "
                                         "(flags override it)")
    config_path, profile = _early_flags(argv)
    values = read_yaml(Path(config_path)) if config_path else {}
    profile = profile_name(profile or values.get("profile"))
    values = {**_with_profile(values, profile, config_path), "profile": profile}  # resolved: printed and recorded
    inner = values.pop(flatten, {}) or {}
    if not isinstance(inner, dict):
        raise ConfigError(f"config {config_path}: '{flatten}' must hold key: value pairs")
    values.update(inner)
    inner_names = {f.name for f in dataclasses.fields(nested)}
    outer_names = {f.name for f in dataclasses.fields(config)} - {flatten}
    _check_keys(values, inner_names | outer_names)
    parser.set_defaults(**values)
    args = vars(parser.parse_args(argv))
    made = nested(**{k: v for k, v in args.items() if k in inner_names})
    return config(**{flatten: made}, **{k: v for k, v in args.items() if k in outer_names})


def _check_keys(values: dict, known: set[str]) -> None:
    """A ConfigError naming every key no config has, with the nearest known key as a hint."""
    unknown = sorted(set(values) - known)
    if unknown:
        hints = [k + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(k, known, 1)) for k in unknown]
        raise ConfigError(f"unknown config keys: {', '.join(hints)}")


def _with_profile(values: dict, profile: str, config_path: str | None) -> dict:
    """The YAML's keys with its ``profiles: {<profile>: {...}}`` block merged on top (nested dicts key by key)."""
    blocks = values.pop("profiles", None) or {}
    if not isinstance(blocks, dict) or not all(isinstance(b, dict) or b is None for b in blocks.values()):
        raise ConfigError(f"config {config_path}: 'profiles' must map profile names to key: value pairs")
    unknown = sorted(set(blocks) - set(PROFILES))
    if unknown:
        raise ConfigError(f"config {config_path}: profiles: {', '.join(unknown)} is not a profile; use "
                          f"{', '.join(PROFILES)}")
    merged = dict(values)
    for key, value in (blocks.get(profile) or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = {**merged[key], **value}
        merged[key] = value
    return merged


def _early_flags(argv: list[str] | None) -> tuple[str | None, str | None]:
    """``--config`` and ``--profile`` alone, read before the full parse: the file and its profile's block give the
    defaults that the other flags then override (and that ``--help`` shows)."""
    pre = ConfigArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--profile")
    early = pre.parse_known_args(argv)[0]
    return early.config, early.profile
