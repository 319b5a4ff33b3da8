"""A JupyterLab chat widget for a ``ChatSession``: transcript, input box, send / clear, sampling sliders.

Made for a projector: replies stream into the transcript token by token. Every callback is a plain method
(``on_send``, ``on_clear``, ``on_setting``) that only reads and writes widget values, so tests drive it
without a browser: set ``widget.input.value`` and call ``widget.on_send()`` (notebook 06 does, and prints
``transcript_text()``, so that its saved copy shows an exchange where the widget itself cannot be drawn).
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from ftlib.chat import ChatSession

_STYLE = "font-family: sans-serif; line-height: 1.4; white-space: pre-wrap;"
_COLORS = {"user": "#1f4e9c", "assistant": "#2b7a2b", "note": "#888888"}


class ChatWidget:
    """``display(ChatWidget(session).view)`` in a notebook. ``entries`` holds the transcript as (who, text)."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.entries: list[tuple[str, str]] = []
        s = session.sampling
        self.transcript = widgets.HTML(layout=widgets.Layout(height="320px", overflow_y="auto",
                                                             border="1px solid #ccc", padding="6px"))
        self.input = widgets.Text(placeholder="Type a message and press Send", layout=widgets.Layout(width="70%"))
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.clear_button = widgets.Button(description="Clear")
        self.status = widgets.Label()
        self.sliders = {
            "temperature": widgets.FloatSlider(value=s.get("temperature", 0.7), min=0.1, max=2.0, step=0.05,
                                               description="temperature"),
            "top_k": widgets.IntSlider(value=s.get("top_k", 50), min=0, max=200, description="top-k"),
            "top_p": widgets.FloatSlider(value=s.get("top_p", 0.9), min=0.05, max=1.0, step=0.05, description="top-p"),
            "repetition_penalty": widgets.FloatSlider(value=s.get("repetition_penalty", 1.1), min=1.0, max=2.0,
                                                      step=0.05, description="penalty"),
            "max_new_tokens": widgets.IntSlider(value=session.max_new_tokens, min=8, max=512, step=8,
                                                description="max tokens"),
        }
        self.greedy = widgets.Checkbox(value=not s.get("do_sample", True), description="greedy")
        self.send_button.on_click(self.on_send)
        self.clear_button.on_click(self.on_clear)
        for slider in [*self.sliders.values(), self.greedy]:
            slider.observe(self.on_setting, names="value")
        self.view = widgets.VBox([
            self.transcript,
            widgets.HBox([self.input, self.send_button, self.clear_button]),
            self.status,
            widgets.HBox([widgets.VBox(list(self.sliders.values())[:3]),
                          widgets.VBox([*list(self.sliders.values())[3:], self.greedy])]),
        ])
        self._render()

    def _render(self, partial: str | None = None) -> None:
        rows = list(self.entries) + ([("assistant", partial)] if partial is not None else [])
        parts = [f'<div style="color:{_COLORS[who]}"><b>{"You" if who == "user" else who.title()}:</b> '
                 f"{html.escape(text)}</div>" for who, text in rows]
        self.transcript.value = f'<div style="{_STYLE}">' + "".join(parts) + "</div>"

    def transcript_text(self) -> str:
        """The transcript as plain text: a saved notebook (GitHub, nbviewer) shows no widgets, only printed text."""
        return "\n".join(f"{'You' if who == 'user' else who.title()}: {text}" for who, text in self.entries)

    def on_send(self, _button=None) -> None:
        """Send the input box's text and stream the reply into the transcript."""
        message = self.input.value.strip()
        if not message:
            self.status.value = "Type a message first."
            return
        self.input.value, self.status.value = "", "thinking..."
        self.entries.append(("user", message))
        self._render()
        reply = ""
        try:
            for piece in self.session.stream(message):
                reply += piece
                self._render(partial=reply)
        except ValueError as e:
            self.entries.append(("note", str(e)))
            self.status.value = ""
            self._render()
            return
        self.entries.append(("assistant", self.session.last_reply.text))
        if self.session.last_reply.truncated:
            self.entries.append(("note", f"(reply cut at {self.session.max_new_tokens} tokens)"))
        self.status.value = f"{self.session.last_reply.prompt_tokens} prompt tokens"
        self._render()

    def on_clear(self, _button=None) -> None:
        """Start a new conversation."""
        self.session.reset()
        self.entries.clear()
        self.status.value = "history cleared"
        self._render()

    def on_setting(self, _change=None) -> None:
        """Copy the sliders into the session's sampling settings (used from the next reply on)."""
        for name, slider in self.sliders.items():
            if name == "max_new_tokens":
                self.session.max_new_tokens = slider.value
            else:
                self.session.sampling[name] = slider.value
        self.session.sampling["do_sample"] = not self.greedy.value
