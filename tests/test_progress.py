"""Saved notebooks show finished progress bars: with $FTLIB_FINISHED_BARS a bar prints one line, at 100 %."""
from __future__ import annotations

from tqdm.auto import tqdm as live

from ftlib.progress import ENV, FinishedBar, progress_bar


def test_finished_bar_prints_one_line_with_the_final_state(monkeypatch, capsys):
    monkeypatch.setenv(ENV, "1")
    bar = progress_bar(total=4, desc="train")
    assert isinstance(bar, FinishedBar)
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss=0.5)
    assert capsys.readouterr().err == ""  # nothing while it runs
    bar.close()
    bar.close()  # closing twice prints once
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err
    assert err.startswith("train: 100%") and "4/4" in err and "loss=0.5" in err


def test_iterating_prints_the_final_count(monkeypatch, capsys):
    monkeypatch.setenv(ENV, "1")
    assert list(progress_bar(range(3), desc="gen")) == [0, 1, 2]
    assert "gen: 100%" in capsys.readouterr().err


def test_live_bars_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    bar = progress_bar(total=1, disable=True)
    assert type(bar) is live
