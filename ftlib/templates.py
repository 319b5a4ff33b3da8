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

# The two prompts of the original Stanford Alpaca project (same wording). Its training text ends the prompt at
# "### Response:"; like the tatsu-lab/alpaca ``text`` column and the article we put a newline after it, so the
# response starts on its own line and its first token never merges with the prompt's last one.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_STYLES = ("alpaca", "article")


def alpaca_prompt(instruction: str, input: str = "", style: str = "alpaca") -> str:
    """The prompt alone (what a model sees at inference).

    ``style="alpaca"`` picks the no-input prompt when ``input`` is empty, as the original project does;
    ``style="article"`` always uses the with-input prompt, leaving an empty ``### Input:`` section — the article's
    simplification, kept so the two can be compared.
    """
    if style not in ALPACA_STYLES:
        raise ValueError(f"unknown Alpaca style {style!r}; choose one of {ALPACA_STYLES}")
    if style == "alpaca" and not input.strip():
        return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
    return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input)


def format_alpaca(record: dict, style: str = "alpaca") -> tuple[str, str]:
    """``(prompt, response)`` for an ``instruction/input/output`` record; no special tokens added.

    Returned as a pair because the split point is what masking needs: the prompt is not trained on.
    """
    prompt = alpaca_prompt(record["instruction"], record.get("input") or "", style)
    return prompt, record["output"]
