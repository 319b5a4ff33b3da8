"""Chat with a model: a ``ChatSession`` that keeps the history, and a terminal chat (``python -m ftlib.chat``).

A chat model only ever continues text. The session turns the conversation into that text with the chat
template the model was trained with (stored with its tokenizer: the model's own, or the article's
``<|role|>`` template that ``ftlib.templates.ARTICLE_CHAT_TEMPLATE`` writes), streams the reply through
``ftlib.generation.stream_generate`` until the end-of-turn token, and drops the oldest turns when the
conversation outgrows the model's context.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftlib.generation import context_length, stream_generate
from ftlib.stopping import default_stop_token_ids

# Tokens that end a turn in common chat formats; used as stop tokens when the tokenizer knows them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
QUIT_WORDS = ("quit", "exit", "q")


@dataclass
class Reply:
    """One assistant turn: its text (end-of-turn marker stripped) and why it ended."""

    text: str
    finish_reason: str  # "eos" | "stop_string" | "length"
    prompt_tokens: int

    @property
    def truncated(self) -> bool:
        """True when the reply hit ``max_new_tokens`` (or the context) before the model ended its turn."""
        return self.finish_reason == "length"


class ChatSession:
    """A conversation with one model: history, rendering, streaming replies, trimming to the context."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None,
                 chat_template: str | None = None, max_new_tokens: int = 256, stop_strings: list[str] | None = None,
                 **sampling) -> None:
        """``sampling``: ``generate``'s knobs (temperature, top_k, top_p, repetition_penalty, do_sample, seed...)."""
        self.template = chat_template or tokenizer.chat_template
        if not self.template:
            raise ValueError(
                f"The tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')!r} has no chat template. Pass "
                "chat_template=ARTICLE_CHAT_TEMPLATE (from ftlib.templates) if the model was fine-tuned on the "
                "article's <|role|> format, or use a model that ships a chat template (e.g. an -Instruct model).")
        self.model, self.tokenizer, self.system_prompt = model, tokenizer, system_prompt
        self.max_new_tokens, self.stop_strings = max_new_tokens, list(stop_strings or [])
        self.sampling = {"temperature": 0.7, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.1, **sampling}
        vocab = tokenizer.get_vocab()
        self.stop_token_ids = default_stop_token_ids(model, tokenizer) | {vocab[t] for t in END_OF_TURN_TOKENS
                                                                          if t in vocab}
        self.messages: list[dict[str, str]] = []  # user and assistant turns, oldest first
        self.last_reply: Reply | None = None

    @property
    def history(self) -> list[dict[str, str]]:
        """What the template renders: the system prompt (if any), then the turns."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + self.messages

    def render(self, add_generation_prompt: bool = True) -> str:
        """The exact text the model sees, as ``tokenizer.apply_chat_template`` renders the history."""
        return self.tokenizer.apply_chat_template(self.history, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def prompt_tokens(self) -> int:
        return len(self.tokenizer(self.render(), add_special_tokens=False).input_ids)

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.messages.clear()
        self.last_reply = None

    def trim(self) -> int:
        """Drop the oldest turns until prompt + ``max_new_tokens`` fits the context; returns how many were dropped."""
        limit, dropped = context_length(self.model), 0
        while self.prompt_tokens() + self.max_new_tokens > limit:
            if len(self.messages) <= 1:
                raise ValueError(
                    f"The message alone ({self.prompt_tokens()} tokens with the system prompt) plus max_new_tokens="
                    f"{self.max_new_tokens} exceeds the model's context of {limit} tokens: shorten it or lower "
                    "max_new_tokens.")
            self.messages.pop(0)  # the oldest turn, then anything up to the next user message
            dropped += 1
            while self.messages and self.messages[0]["role"] != "user":
                self.messages.pop(0)
                dropped += 1
        return dropped

    def stream(self, user_message: str) -> Iterator[str]:
        """Add the user's message, then yield the reply piece by piece; the turn is recorded when it ends."""
        if not user_message or not user_message.strip():
            raise ValueError("Empty message: type something to say to the model.")
        self.messages.append({"role": "user", "content": user_message.strip()})
        try:
            self.trim()
        except ValueError:
            self.messages.pop()
            raise
        prompt = self.render()
        stream = stream_generate(self.model, self.tokenizer, prompt, max_new_tokens=self.max_new_tokens,
                                 stop_token_ids=self.stop_token_ids, stop_strings=self.stop_strings,
                                 add_special_tokens=False, **self.sampling)
        started = False
        for piece in stream:
            if not started:  # the reply's leading whitespace is the template's business, not the reader's
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece
        n_prompt = len(self.tokenizer(prompt, add_special_tokens=False).input_ids)
        self.last_reply = Reply(stream.text.strip(), stream.finish_reason, n_prompt)
        self.messages.append({"role": "assistant", "content": self.last_reply.text})

    def send(self, user_message: str) -> Reply:
        """Like ``stream`` but returns the whole ``Reply`` at once."""
        for _ in self.stream(user_message):
            pass
        return self.last_reply


def ask(model, tokenizer, questions: list[str], chat_template: str | None = None, max_new_tokens: int = 40,
        **sampling) -> dict[str, str]:
    """One fresh conversation per question; greedy unless ``sampling`` says otherwise. For before/after probes."""
    sampling = {"do_sample": False, **sampling}
    return {q: ChatSession(model, tokenizer, chat_template=chat_template, max_new_tokens=max_new_tokens,
                           **sampling).send(q).text for q in questions}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ftlib.chat", description="Chat with a model in the terminal. "
                                "Type quit, exit or q (or Ctrl-D) to leave, /reset to clear the history.")
    p.add_argument("--model", default="instruct", help="a model directory, an asset name or a role (default: instruct)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--chat-template", choices=["model", "article"], default="model",
                   help="'article' renders with the article's <|role|> template instead of the tokenizer's")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--greedy", action="store_true", help="always pick the most likely token (deterministic)")
    p.add_argument("--seed", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ftlib.device import generation_dtype
    from ftlib.models import load_model
    from ftlib.templates import ARTICLE_CHAT_TEMPLATE

    try:
        model, tokenizer = load_model(args.model, dtype=generation_dtype())
        session = ChatSession(
            model, tokenizer, system_prompt=args.system, max_new_tokens=args.max_new_tokens,
            chat_template=ARTICLE_CHAT_TEMPLATE if args.chat_template == "article" else None,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, do_sample=not args.greedy, seed=args.seed)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Chatting with {args.model}. quit / exit / q or Ctrl-D to leave, /reset to start over.")
    while True:
        try:
            line = input("User: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if line.lower() in QUIT_WORDS:
            break
        if line == "/reset":
            session.reset()
            print("(history cleared)")
            continue
        if not line:
            print("(type a message; quit to leave)")
            continue
        print("Assistant: ", end="", flush=True)
        try:
            for piece in session.stream(line):
                print(piece, end="", flush=True)
        except ValueError as e:
            print(f"\n(error: {e})")
            continue
        print()
        if session.last_reply.truncated:
            print(f"[reply cut at {args.max_new_tokens} tokens - raise --max-new-tokens for longer replies]")
    print("Goodbye!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
