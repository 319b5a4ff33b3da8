"""Prompt templates: Alpaca instruction prompts and chat templates.

The article's chat format, ``<|{role}|>\\n{content}\\n`` with BOS at the start and EOS after every message, is
written as a Jinja chat template so that it travels with a saved tokenizer exactly like a model's own template:
``tokenizer.chat_template = ARTICLE_CHAT_TEMPLATE`` and ``apply_chat_template`` then renders it.
"""
from __future__ import annotations

ARTICLE_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
