"""Show a tokenised sample as coloured HTML: which tokens are trained on, which are masked.

A learner sees the masking rules at a glance: the prompt greyed out, the response (and its end token) green.
The colours are inline styles, which a viewer that sanitises HTML may drop; so the display also carries a
text/plain version with the trained spans between [[ and ]], which such a viewer shows instead.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

TRAINED = "#c8f7c5"
MASKED = "#e6e6e6"


def _piece(text: str) -> str:
    return html.escape(text).replace("\n", "↵<br>").replace(" ", "&nbsp;") or "∅"


def tokens_html(tokenizer: PreTrainedTokenizerBase, input_ids: Sequence[int], labels: Sequence[int],
                title: str | None = None) -> str:
    """HTML with one box per token: green where ``labels`` trains on it, grey where it is -100."""
    boxes = []
    for token, label in zip(input_ids, labels):
        colour = TRAINED if label != -100 else MASKED
        text = tokenizer.decode([token])
        boxes.append(f'<span title="id {token}" style="background:{colour};border:1px solid #fff;'
                     f'font-family:monospace;font-size:12px">{_piece(text)}</span>')
    legend = (f'<div style="font-size:12px;margin-bottom:4px"><span style="background:{TRAINED}">&nbsp;trained on'
              f'&nbsp;</span> <span style="background:{MASKED}">&nbsp;masked (-100)&nbsp;</span></div>')
    head = f"<b>{html.escape(title)}</b><br>" if title else ""
    return f'<div style="line-height:1.9">{head}{legend}{"".join(boxes)}</div>'


def tokens_text(tokenizer: PreTrainedTokenizerBase, input_ids: Sequence[int], labels: Sequence[int],
                title: str | None = None) -> str:
    """The plain-text twin of ``tokens_html``: the decoded sample with each run of trained tokens in [[...]]."""
    parts, trained = [], False
    for token, label in zip(input_ids, labels):
        if (label != -100) != trained:
            parts.append("[[" if not trained else "]]")
            trained = not trained
        parts.append(tokenizer.decode([token]).replace("\n", "↵\n"))
    if trained:
        parts.append("]]")
    legend = "[[...]] = trained on; the rest is masked (-100)"
    return "\n".join(filter(None, [title, legend, "".join(parts)]))


class TokenView:
    """One display with two forms: the coloured HTML, and the [[...]] text for viewers without HTML styles."""

    def __init__(self, html: str, text: str):
        self.html, self.text = html, text

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"text/html": self.html, "text/plain": self.text}


def show_tokens(tokenizer: PreTrainedTokenizerBase, input_ids: Sequence[int], labels: Sequence[int],
                title: str | None = None):
    """Display ``tokens_html`` in a notebook, with ``tokens_text`` as its text/plain fallback."""
    from IPython.display import display

    display(TokenView(tokens_html(tokenizer, input_ids, labels, title),
                      tokens_text(tokenizer, input_ids, labels, title)))


def side_by_side_html(texts: dict[str, str]) -> str:
    """HTML table with one column per titled text, whitespace and special tokens shown as they are."""
    cells = "".join(f'<td style="vertical-align:top;padding:4px"><b>{html.escape(title)}</b><pre style='
                    f'"white-space:pre-wrap;font-size:12px;background:#f6f6f6">{html.escape(text)}</pre></td>'
                    for title, text in texts.items())
    return f'<table style="table-layout:fixed;width:100%"><tr>{cells}</tr></table>'


def show_side_by_side(texts: dict[str, str]):
    """Display ``side_by_side_html`` in a notebook."""
    from IPython.display import HTML, display

    display(HTML(side_by_side_html(texts)))
