"""Alpaca prompts: the original project's two prompts, and the article's always-input variant."""
import pytest

from ftlib.templates import (
    ALPACA_PROMPT_INPUT,
    ALPACA_PROMPT_NO_INPUT,
    ARTICLE_CHAT_TEMPLATE,
    alpaca_prompt,
    format_alpaca,
)

HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
              "Write a response that appropriately completes the request.\n\n")
HEAD_NO_INPUT = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.\n\n")


def test_no_input_record_uses_the_no_input_prompt():
    prompt, response = format_alpaca({"instruction": "Name a colour.", "input": "", "output": "Blue."})
    assert prompt == HEAD_NO_INPUT + "### Instruction:\nName a colour.\n\n### Response:\n"
    assert response == "Blue."
    assert "### Input" not in prompt


def test_input_record_uses_the_input_prompt():
    prompt, _ = format_alpaca({"instruction": "Find the verb.", "input": "John walks.", "output": "walks"})
    assert prompt == HEAD_INPUT + "### Instruction:\nFind the verb.\n\n### Input:\nJohn walks.\n\n### Response:\n"


@pytest.mark.parametrize("missing_input", [{"input": ""}, {"input": None}, {}, {"input": "  \n"}])
def test_empty_or_absent_input_means_no_input(missing_input):
    prompt, _ = format_alpaca({"instruction": "Say hi.", "output": "Hi", **missing_input})
    assert prompt == ALPACA_PROMPT_NO_INPUT.format(instruction="Say hi.")


def test_article_style_always_has_an_input_section():
    prompt, response = format_alpaca({"instruction": "Say hi.", "input": "", "output": "Hi"}, style="article")
    assert prompt == HEAD_INPUT + "### Instruction:\nSay hi.\n\n### Input:\n\n\n### Response:\n"
    assert response == "Hi"


def test_prompt_is_what_inference_sees():
    # the prompt alone (no response) is exactly what a model is given at inference
    assert alpaca_prompt("Find the verb.", "John walks.") == ALPACA_PROMPT_INPUT.format(
        instruction="Find the verb.", input="John walks.")


def test_unknown_style_is_rejected():
    with pytest.raises(ValueError, match="style"):
        format_alpaca({"instruction": "x", "input": "", "output": "y"}, style="vicuna")


def test_article_chat_template_unchanged(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text = tokenizer.apply_chat_template(messages, chat_template=ARTICLE_CHAT_TEMPLATE, tokenize=False)
    assert text == "<|im_start|><|user|>\nHi\n<|im_end|><|assistant|>\nHello\n<|im_end|>"
