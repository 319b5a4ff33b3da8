"""`make lab`'s settings override: JupyterLab 4.6 asks "get notified about official Jupyter news?" only while the
notification plugin's fetchNews is "none" (its default). The override must make the *default* "false", read by
jupyterlab_server the way the running lab reads it, and validate against the plugin's own schema."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "@jupyterlab/apputils-extension:notification"


def test_override_turns_the_news_question_and_update_check_off(tmp_path):
    settings_utils = pytest.importorskip("jupyterlab_server.settings_utils")
    app_settings = tmp_path / "lab" / "settings"
    app_settings.mkdir(parents=True)
    (app_settings / "overrides.json").write_text((ROOT / "tools" / "lab-overrides.json").read_text())
    schemas = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
    if not (schemas / "@jupyterlab" / "apputils-extension" / "notification.json").is_file():
        pytest.skip("JupyterLab's schemas are not installed in this environment")
    overrides, error = settings_utils._get_overrides(str(app_settings))
    assert not error
    settings, warnings = settings_utils.get_settings(str(app_settings), str(schemas), str(tmp_path / "user"),
                                                     schema_name=PLUGIN, overrides=overrides)
    defaults = settings["schema"]["properties"]
    assert defaults["fetchNews"]["default"] == "false" and defaults["checkForUpdates"]["default"] is False
    assert not [w for w in warnings if w]
    # without the override the default is "none": the question would be asked
    (tmp_path / "bare").mkdir()
    plain, _ = settings_utils.get_settings(str(tmp_path / "bare"), str(schemas), str(tmp_path / "user"),
                                           schema_name=PLUGIN)
    assert plain["schema"]["properties"]["fetchNews"]["default"] == "none"
    assert json.loads((ROOT / "tools" / "lab-overrides.json").read_text())[PLUGIN]["fetchNews"] == "false"
