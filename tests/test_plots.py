"""The plots draw the numbers they are given (Agg backend: no display)."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from ftlib.course import plots  # noqa: E402
from ftlib.evaluate import GenerationReport  # noqa: E402
from ftlib.generation import Generation  # noqa: E402


def test_running_mean():
    assert plots.running_mean([2, 4, 6, 8], 2) == [2, 3, 5, 7]
    assert plots.running_mean([1, 2, 3], 1) == [1, 2, 3]


def test_plot_losses_smooths_and_marks_eval():
    history = [{"step": 1, "loss": 4.0}, {"step": 2, "loss": 2.0, "eval_loss": 3.0}, {"step": 3, "loss": 0.0}]
    ax = plots.plot_losses(history, smooth=2)
    train_line, eval_line = ax.get_lines()
    assert list(train_line.get_ydata()) == [4.0, 3.0, 1.0] and list(eval_line.get_xdata()) == [2]


def test_stop_rates_and_lengths_draw_the_reports():
    def reply(n, reason):
        return Generation(text="x", token_ids=list(range(n)), finish_reason=reason)

    report = GenerationReport(["a", "b", "c"], [reply(3, "eos"), reply(8, "length"), reply(5, "eos")], 8)
    ax = plots.plot_stop_rates({"tuned": report.stop_rate, "base": 0.0})
    assert [p.get_height() for p in ax.patches] == pytest.approx([2 / 3, 0.0])
    ax = plots.plot_lengths({"tuned": report})
    assert sum(p.get_height() for p in ax.patches) == 3  # one bar segment per bin; every reply counted once
    assert ax.get_lines()[0].get_xdata()[0] == 8  # the dashed limit


def test_before_after_bars_are_the_softmax_of_the_top_k():
    class Tok:
        def decode(self, ids):
            return f"t{ids[0]}"

    before = torch.tensor([3.0, 1.0, 2.0, 0.0])
    after = torch.tensor([3.0, float("-inf"), 2.0, float("-inf")])
    ax = plots.plot_before_after(before, after, Tok(), k=2)
    heights = [p.get_height() for p in ax.patches]
    expected_after = after.softmax(-1)[[0, 2]].tolist()
    assert heights == pytest.approx(before.softmax(-1)[[0, 2]].tolist() + expected_after)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t0", "t2"]


def test_plot_scores_draws_right_answers_and_stop_rates():
    scores = {"base": {"right": 3, "n": 10, "stop_rate": 0.0, "repetition_rate": 0.5},
              "tuned": {"right": 6, "n": 10, "stop_rate": 0.9, "repetition_rate": 0.0}}
    left, right = plots.plot_scores(scores)
    assert [round(p.get_width(), 6) for p in left.patches] == [0.3, 0.6]
    assert [t.get_text() for t in left.texts] == ["3/10", "6/10"]
    assert [round(p.get_height(), 6) for p in right.patches] == [0.0, 0.9, 0.5, 0.0]
