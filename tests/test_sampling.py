"""Each logits step equals the transformers logits processor of the same name, on random logits."""
import pytest
import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ftlib.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    process_logits,
)

B, V = 4, 97


@pytest.fixture()
def logits():
    torch.manual_seed(0)
    return torch.randn(B, V) * 3


@pytest.fixture()
def previous_ids():
    torch.manual_seed(1)
    return torch.randint(0, V, (B, 12))


def article_penalty_loop(logits_row, tokens, penalty):
    """The article's reference loop, verbatim in behaviour: one token at a time, duplicates compound."""
    logits_row = logits_row.clone()
    for tok in tokens:
        if logits_row[tok] > 0:
            logits_row[tok] /= penalty
        else:
            logits_row[tok] *= penalty
    return logits_row


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_matches_hf(logits, previous_ids, temperature):
    expected = TemperatureLogitsWarper(temperature)(previous_ids, logits.clone())
    torch.testing.assert_close(apply_temperature(logits, temperature), expected)


@pytest.mark.parametrize("top_k", [1, 5, 50, V, 500])
def test_top_k_matches_hf(logits, previous_ids, top_k):
    expected = TopKLogitsWarper(top_k)(previous_ids, logits.clone())
    assert torch.equal(apply_top_k(logits, top_k), expected)
    assert (apply_top_k(logits, top_k) > float("-inf")).sum(-1).tolist() == [min(top_k, V)] * B


def test_top_k_zero_keeps_everything_and_ties_survive(logits):
    assert torch.equal(apply_top_k(logits, 0), logits)
    tied = torch.tensor([[1.0, 3.0, 3.0, 0.5]])
    assert torch.equal(apply_top_k(tied, 1), torch.tensor([[float("-inf"), 3.0, 3.0, float("-inf")]]))


@pytest.mark.parametrize("top_p", [0.01, 0.3, 0.9, 0.999, 1.0])
def test_top_p_matches_hf(logits, previous_ids, top_p):
    expected = TopPLogitsWarper(top_p)(previous_ids, logits.clone())
    assert torch.equal(apply_top_p(logits, top_p), expected)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = apply_top_p(logits, 0.75) > float("-inf")
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 >= 0.75, and 0.5 alone is not
    assert (apply_top_p(logits, 1e-6) > float("-inf")).sum() == 1  # the top token always survives


@pytest.mark.parametrize("penalty", [0.8, 1.0, 1.3, 2.0])
def test_repetition_penalty_default_matches_hf(logits, previous_ids, penalty):
    expected = RepetitionPenaltyLogitsProcessor(penalty)(previous_ids, logits.clone())
    torch.testing.assert_close(apply_repetition_penalty(logits, previous_ids, penalty), expected)


@pytest.mark.parametrize("window", [1, 5, 12, 40])
def test_article_penalty_matches_the_article_loop(logits, previous_ids, window):
    got = apply_repetition_penalty(logits, previous_ids, 1.3, window=window, per_occurrence=True)
    for row in range(B):
        expected = article_penalty_loop(logits[row], previous_ids[row, -window:].tolist(), 1.3)
        torch.testing.assert_close(got[row], expected)


def test_article_penalty_differs_from_hf_on_purpose():
    """Repeats compound in the article's loop; HF penalises each distinct token once. And the window forgets."""
    logits = torch.tensor([[2.0, -2.0, 1.0, 4.0]])
    history = torch.tensor([[3, 0, 0, 0, 1]])  # token 0 three times, token 1 once, token 3 long ago
    hf = apply_repetition_penalty(logits, history, 2.0)
    article = apply_repetition_penalty(logits, history, 2.0, window=4, per_occurrence=True)
    assert hf.tolist() == [[1.0, -4.0, 1.0, 2.0]]
    assert article.tolist() == [[0.25, -4.0, 1.0, 4.0]]  # 2 / 2**3; token 3 is outside the last 4
    assert torch.equal(article[0], article_penalty_loop(logits[0], [0, 0, 0, 1], 2.0))


def test_steps_accept_one_row_and_never_modify_their_input(logits, previous_ids):
    before = logits.clone()
    for out, row in [(apply_top_k(logits, 5), apply_top_k(logits[0], 5)),
                     (apply_top_p(logits, 0.5), apply_top_p(logits[0], 0.5)),
                     (apply_repetition_penalty(logits, previous_ids, 1.5),
                      apply_repetition_penalty(logits[0], previous_ids[0], 1.5))]:
        assert torch.equal(out[0], row)
    assert torch.equal(logits, before)


def test_process_logits_chains_the_steps_in_order(logits, previous_ids):
    chained = apply_top_p(apply_top_k(apply_repetition_penalty(apply_temperature(logits, 0.7), previous_ids, 1.2),
                                      10), 0.9)
    assert torch.equal(process_logits(logits, previous_ids, 0.7, 10, 0.9, 1.2), chained)


@pytest.mark.parametrize("call, message", [
    (lambda x: apply_temperature(x, 0.0), "greedy"),
    (lambda x: apply_temperature(x, -1.0), "greedy"),
    (lambda x: apply_top_k(x, -1), "top_k"),
    (lambda x: apply_top_p(x, 0.0), "top_p"),
    (lambda x: apply_top_p(x, 1.5), "top_p"),
    (lambda x: apply_repetition_penalty(x, torch.tensor([[1]]), 0.0), "repetition_penalty"),
])
def test_bad_settings_raise_clear_errors(logits, call, message):
    with pytest.raises(ValueError, match=message):
        call(logits)
