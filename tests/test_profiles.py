"""Profiles at the CLI: the config it prints and records names the profile in use, and a hub profile without the
hub ends in one line that says which profile, what could not be reached and the fix (exit 2, no traceback)."""
import json

import pytest

from ftlib import profiles, sft
from ftlib.profiles import PROFILES


@pytest.mark.parametrize("how", ["env", "flag"])
def test_the_printed_config_names_the_profile_in_use(how, monkeypatch):
    monkeypatch.setenv("FTLIB_PROFILE", "tiny")
    argv = ["--config", "configs/sft-chat.yaml"] + (["--profile", "tiny"] if how == "flag" else [])
    cfg = sft.parse_config(argv)
    assert cfg.profile == "tiny"  # was None when the profile came from $FTLIB_PROFILE
    monkeypatch.delenv("FTLIB_PROFILE")
    assert sft.parse_config(["--config", "configs/sft-chat.yaml"]).profile == "offline"


def test_hub_profile_without_the_hub_is_one_line_and_exit_2(monkeypatch, capsys):
    # no network here anyway; offline mode makes `datasets` fail at once instead of waiting on DNS
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("FTLIB_PROFILE", "hub-cpu")
    monkeypatch.setattr(profiles, "_SET_OFFLINE", False)
    assert sft.main(["--config", "configs/sft-chat.yaml", "--output-dir", "/nonexistent/never-written"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["profile"] == "hub-cpu"
    (line,) = err.strip().splitlines()
    hub_alpaca = PROFILES["hub-cpu"].datasets["alpaca"]
    assert line.startswith("error: profile 'hub-cpu': could not reach dataset ") and hub_alpaca in line
    assert "FTLIB_PROFILE=offline" in line and "huggingface-cli login" in line



@pytest.mark.parametrize("error", [ConnectionError("Couldn't reach 'tatsu-lab/alpaca' on the Hub"),
                                   OSError("You are trying to access a gated repo.")])
def test_an_unreachable_hub_dataset_is_one_line_naming_profile_and_fix(error, monkeypatch, capsys):
    """The hub libraries raise ConnectionError (no network) or an OSError (a gated repo); either ends in one line."""
    import datasets

    def unreachable(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(profiles, "_SET_OFFLINE", False)
    argv = ["--config", "configs/sft-chat.yaml", "--profile", "hub-cpu", "--output-dir", "/nonexistent/never-written"]
    assert sft.main(argv) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["profile"] == "hub-cpu"
    (line,) = err.strip().splitlines()
    hub_alpaca = PROFILES["hub-cpu"].datasets["alpaca"]
    assert line.startswith(f"error: profile 'hub-cpu': could not reach dataset {hub_alpaca!r}") and str(error) in line
    assert "FTLIB_PROFILE=offline" in line and "huggingface-cli login" in line


def test_an_unreachable_hub_model_is_one_line_naming_profile_and_fix(monkeypatch, capsys):
    """The data loads (here: faked), the model's hub download fails: the line names the profile like data's do."""
    import datasets
    import transformers

    def unreachable(*_args, **_kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    records = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "Hi"},
                                                        {"role": "assistant", "content": "Hello"}]}])
    monkeypatch.setattr(sft, "load_records", lambda *_args, **_kwargs: records)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", unreachable)
    monkeypatch.setattr(profiles, "_SET_OFFLINE", False)
    argv = ["--config", "configs/sft-chat.yaml", "--profile", "hub-cpu", "--output-dir", "/nonexistent/never-written"]
    assert sft.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    hub_base = PROFILES["hub-cpu"].models["base"]
    assert line.startswith(f"error: profile 'hub-cpu': model 'base': Could not load {hub_base!r}"), line
    assert "FTLIB_PROFILE=offline" in line and "huggingface-cli login" in line
