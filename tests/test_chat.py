"""ChatSession, the terminal chat (driven through a pipe) and the widget's callbacks."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest

from ftlib.chat import ChatSession, main
from ftlib.course.chat_widget import ChatWidget
from ftlib.templates import ARTICLE_CHAT_TEMPLATE
from ftlib.tiny import tiny_llama_for

ROOT = Path(__file__).resolve().parents[1]
TURNS = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
         {"role": "user", "content": "Tell me a joke."}]


@pytest.mark.parametrize("template", [None, ARTICLE_CHAT_TEMPLATE])
def test_render_equals_apply_chat_template(tiny_model, tokenizer, template):
    session = ChatSession(tiny_model, tokenizer, system_prompt="Be brief.", chat_template=template)
    session.messages.extend(TURNS)
    history = [{"role": "system", "content": "Be brief."}, *TURNS]
    expected = tokenizer.apply_chat_template(history, chat_template=template or tokenizer.chat_template,
                                             tokenize=False, add_generation_prompt=True)
    assert session.history == history and session.render() == expected


def test_a_tokenizer_without_template_gets_a_clear_error(tiny_model, tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat_template=ARTICLE_CHAT_TEMPLATE"):
        ChatSession(tiny_model, bare)
    session = ChatSession(tiny_model, bare, chat_template=ARTICLE_CHAT_TEMPLATE)
    session.messages.append({"role": "user", "content": "hi"})
    assert session.render() == f"{bare.bos_token}<|user|>\nhi\n{bare.eos_token}<|assistant|>\n"


@pytest.mark.slow
def test_reply_stops_at_end_of_turn_and_is_recorded(instruct):
    model, tok = instruct
    session = ChatSession(model, tok, do_sample=False, max_new_tokens=40)
    pieces = list(session.stream("What is the capital of France?"))
    reply = session.last_reply
    assert reply.finish_reason == "eos" and not reply.truncated and "Paris" in reply.text
    assert "".join(pieces) == reply.text and "<|im_end|>" not in reply.text
    assert session.messages[-1] == {"role": "assistant", "content": reply.text}
    assert session.render(add_generation_prompt=False).endswith(reply.text + "<|im_end|>\n")


def test_reply_hitting_max_tokens_is_marked_truncated(tiny_model, tokenizer):
    session = ChatSession(tiny_model, tokenizer, max_new_tokens=5, seed=0)
    reply = session.send("hello")
    assert reply.truncated and reply.finish_reason == "length"
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    session.reset()
    assert session.messages == [] and session.last_reply is None


def test_trimming_keeps_the_system_prompt_and_fits_the_context(tokenizer):
    model = tiny_llama_for(tokenizer, max_positions=160)
    session = ChatSession(model, tokenizer, system_prompt="You are terse.", max_new_tokens=16, seed=0)
    for i in range(6):
        session.messages += [{"role": "user", "content": f"question {i} " + "word " * 10},
                             {"role": "assistant", "content": f"answer {i} " + "word " * 10}]
    session.send("last question")
    assert session.history[0] == {"role": "system", "content": "You are terse."}
    assert session.messages[0]["role"] == "user" and not session.messages[0]["content"].startswith("question 0")
    assert session.messages[-2]["content"] == "last question"
    assert session.last_reply.prompt_tokens + session.max_new_tokens <= 160


def test_bad_messages_raise_clear_errors(tokenizer):
    session = ChatSession(tiny_llama_for(tokenizer, max_positions=64), tokenizer, max_new_tokens=16)
    with pytest.raises(ValueError, match="Empty message"):
        session.send("   ")
    with pytest.raises(ValueError, match="context of 64 tokens"):
        session.send("word " * 80)
    assert session.messages == []


def test_terminal_chat_through_a_pipe(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    run = subprocess.run([sys.executable, "-m", "ftlib.chat", "--model", str(tmp_path), "--max-new-tokens", "6",
                          "--seed", "0"], input="hello\n\nhow are you?\n/reset\nquit\nnever read\n",
                         capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("Assistant: ") == 2 and "(history cleared)" in run.stdout
    assert "type a message" in run.stdout and run.stdout.rstrip().endswith("Goodbye!")
    assert "[reply cut at 6 tokens" in run.stdout  # a random model never ends its turn


def test_terminal_chat_explains_a_missing_model(capsys, tmp_path):
    assert main(["--model", str(tmp_path / "no-such-model")]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_widget_callbacks_update_the_transcript(tiny_model, tokenizer):
    widget = ChatWidget(ChatSession(tiny_model, tokenizer, max_new_tokens=6, seed=0))
    updates = []
    widget.transcript.observe(lambda change: updates.append(change["new"]), names="value")
    widget.on_send()
    assert widget.entries == [] and "Type a message" in widget.status.value
    widget.input.value = "hi <b>there</b>"
    widget.on_send()
    assert widget.input.value == "" and [who for who, _ in widget.entries] == ["user", "assistant", "note"]
    assert "hi &lt;b&gt;there&lt;/b&gt;" in widget.transcript.value and len(updates) >= 4  # streamed
    reply = widget.session.last_reply.text
    assert widget.transcript_text() == f"You: hi <b>there</b>\nAssistant: {reply}\nNote: {widget.entries[2][1]}"
    widget.sliders["temperature"].value = 1.5
    widget.greedy.value = True
    assert widget.session.sampling["temperature"] == 1.5 and widget.session.sampling["do_sample"] is False
    widget.on_clear()
    assert widget.entries == [] and widget.session.messages == [] and "You:" not in widget.transcript.value
