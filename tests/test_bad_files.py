"""Bad data files: one line naming the file, the line or record, the field and the fix; exit code 2; no traceback.

The table runs the CLI's ``main`` per file, and two of them as a real `python -m ftlib.sft` process: the data is
checked before the tokenizer or the model loads. The fuzzer mutates valid records (deleted keys, wrong types,
cut-off bytes, non-UTF-8 bytes), checks ``load_file`` against an oracle that knows what each mutation breaks, and
sends two of its files through the CLI: one that trains on the good records, one that fails.
"""
import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from ftlib.data import DataError, load_file
from ftlib.samples import tokenise_dataset
from ftlib.sft import main
from ftlib.tiny import tiny_llama_for

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
DIR, MISSING = "<a directory>", "<no file>"


def _jsonl(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# file name, its bytes, what the one line must say besides the file name (line or record, field, problem)
BAD_FILES = [
    ("broken.jsonl", _jsonl(GOOD) + b'{"instruction": "x" "output": "y"}\n' + _jsonl(GOOD),
     ["line 2", "not valid JSON", "fix or delete"]),
    ("cut_off.jsonl", _jsonl(GOOD, GOOD)[:-12], ["line 2, column", "cut off"]),
    ("cut_off.json", json.dumps([GOOD, GOOD], indent=1).encode()[:-20],
     ["line 10, column", "not valid JSON", "cut off?"]),
    ("no_output.jsonl", _jsonl({"instruction": "a"}, {"instruction": "b", "input": ""}),
     ["all 2 records are bad", "line 1", "'output'", "missing"]),
    ("no_messages.jsonl", _jsonl({"conversation": CHAT}, {"conversation": CHAT}), ["line 1", "'messages'", "rename"]),
    ("output_number.json", json.dumps([{**GOOD, "output": 42}]).encode(), ["record 0", "'output'", "got int"]),
    ("output_list.jsonl", _jsonl({**GOOD, "output": ["a", "b"]}), ["line 1", "'output'", "got list"]),
    ("messages_not_list.jsonl", _jsonl({"messages": "Hi"}), ["line 1", "'messages'", "got str"]),
    ("content_not_string.jsonl", _jsonl({"messages": [CHAT[0], {"role": "assistant", "content": 7}]}),
     ["line 1", "'messages[1].content'", "got int"]),
    ("roles_do_not_alternate.jsonl", _jsonl({"messages": [CHAT[0], CHAT[0], CHAT[1]]}),
     ["line 1", "'messages[1].role'", "must alternate"]),
    ("empty.jsonl", b"", ["is empty", "JSON list"]),
    ("latin1.jsonl", _jsonl(GOOD) + '{"instruction": "Café?", "output": "Oui."}\n'.encode("latin-1"),
     ["line 2", "not UTF-8", "0xe9", "re-save"]),
    ("object.json", json.dumps({"data": [GOOD, GOOD]}).encode(), ["JSON object", "under 'data'"]),
    ("a_directory", DIR, ["is a directory"]),
    ("missing.jsonl", MISSING, ["no such file"]),
]


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if content == DIR:
        path.mkdir()
    elif content != MISSING:
        path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def tokenizer_only(tmp_path_factory, tokenizer):
    """A model directory with a tokenizer and no weights: a run that loaded the model here would fail otherwise."""
    path = tmp_path_factory.mktemp("tokenizer_only")
    tokenizer.save_pretrained(path)
    return path


def _cli(dataset: Path, model: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ftlib.sft", *_args(dataset, model, out), *flags],
                          capture_output=True, text=True, env=env, timeout=300)


def _assert_one_line(stderr: str, path: Path, words: list[str]) -> str:
    assert "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1, stderr
    line = stderr.strip()
    assert line.startswith("error: ") and str(path) in line, line
    for word in words:
        assert word in line, (word, line)
    return line


def _args(dataset: Path, model: Path, out: Path) -> list[str]:
    return ["--dataset", str(dataset), "--model", str(model), "--eval-fraction", "0", "--output-dir", str(out)]


@pytest.mark.parametrize("name, content, words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_one_line_exit_2(tmp_path, tokenizer_only, capsys, name, content, words):
    """The CLI's ``main`` in this process (a subprocess each would spend a second or two importing torch); the
    process-level contract - exit status 2, nothing else on stderr - is ``test_bad_files_through_the_real_cli``."""
    path = _write(tmp_path, name, content)
    assert main(_args(path, tokenizer_only, tmp_path / "out")) == 2
    line = _assert_one_line(capsys.readouterr().err, path, words)
    assert not (tmp_path / "out").exists()  # nothing half-written
    if content != MISSING:  # a notebook gets the same line as the exception's message
        with pytest.raises(DataError) as e:
            load_file(path)
        assert line == f"error: {e.value}"
        assert e.value.__suppress_context__ or e.value.__context__ is None  # no "during handling..." chain


@pytest.mark.parametrize("name", ["broken.jsonl", "missing.jsonl"])
def test_bad_files_through_the_real_cli(tmp_path, tokenizer_only, name):
    """``python -m ftlib.sft`` as a user runs it: exit status 2 and the same one line, no traceback."""
    _, content, words = next(b for b in BAD_FILES if b[0] == name)
    path = _write(tmp_path, name, content)
    r = _cli(path, tokenizer_only, tmp_path / "out")
    assert r.returncode == 2, r.stderr
    _assert_one_line(r.stderr, path, words)


def test_nothing_left_after_tokenising_is_said_before_the_model_loads(tmp_path, tokenizer_only):
    long = {"instruction": "Count.", "input": "", "output": " ".join(["one two three"] * 20)}
    path = _write(tmp_path, "long.jsonl", _jsonl(long, long))
    r = _cli(path, tokenizer_only, tmp_path / "out", "--max-length", "16")
    assert r.returncode == 2, r.stderr  # with no weights in the directory: the model was never loaded
    _assert_one_line(r.stderr, path, ["no record is left", "record 0", "'input_ids'", "--max-length"])


def test_config_errors_are_one_line_exit_2(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  schedule: cosin\n  warmup_stpes: 3\n")
    bad_value = tmp_path / "bad_value.yaml"
    bad_value.write_text("train:\n  schedule: cosin\n")
    for argv, word in [(["--format", "chatml"], "format 'chatml'"), (["--config", str(bad_yaml)], "line 2"),
                       (["--config", str(tmp_path / "nope.yaml")], "cannot be read"),
                       (["--schedule", "cosin"], "schedule 'cosin': choose one of cosine, linear, constant"),
                       (["--config", str(bad_value)], "schedule 'cosin': choose one of cosine, linear, constant"),
                       (["--config", str(typo)], "warmup_stpes (did you mean warmup_steps?)"),
                       (["--max-steps", "ten"], "--max-steps/--max_steps: invalid int value: 'ten'"),
                       (["--eval-fraction", "1"], "eval_fraction=1.0: must be < 1"),
                       (["--betas", "0.9"], "--betas: expected 2 arguments"),
                       (["--profile", "gpu"], "profile 'gpu': choose one of offline")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and word in err and len(err.splitlines()) == 1, err


def test_a_bad_flag_is_answered_before_anything_heavy_is_imported():
    """The flags are checked before torch, datasets or transformers load (that is what makes the answer instant)."""
    code = ("import sys; from ftlib.sft import main; rc = main(['--schedule', 'cosin']); "
            "print(rc, sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.stdout.split("\n")[0] == "2 []", (r.stdout, r.stderr)
    assert r.stderr == "error: schedule 'cosin': choose one of cosine, linear, constant\n"


def test_tokenise_dataset_names_missing_columns(tokenizer):
    ds = datasets.Dataset.from_list([{"prompt": "a", "completion": "b"}])
    with pytest.raises(DataError, match=r"columns \['prompt', 'completion'\].*'messages'.*rename"):
        tokenise_dataset(ds, tokenizer, on_error="skip")


def test_sharegpt_file_drops_unknown_speakers(tmp_path):
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    path = _write(tmp_path, "sharegpt.json", json.dumps([{"conversations": turns},
                                                         {"conversations": [turns[0], {"from": "bot"}]}]).encode())
    ds, report = load_file(path)
    assert ds[0]["messages"] == CHAT
    assert report.dropped == {"record 1": "field 'conversations[1].from': unknown ShareGPT speaker 'bot'; expected "
                                          "one of ['assistant', 'gpt', 'human', 'system', 'user']"}


def test_damaged_asset_names_its_file(tmp_path, monkeypatch):
    from ftlib import data

    broken = _write(tmp_path, "alpaca.json", json.dumps([GOOD, GOOD], indent=1).encode()[:-20])
    monkeypatch.setattr(data, "require", lambda name: broken)
    with pytest.raises(DataError, match=rf"{broken}: line 10, column \d+ is not valid JSON"):
        data.load_instructions("offline")


# ---------------------------------------------------------------- fuzzing
WRONG_TYPES = [3, 2.5, True, ["x"], {"a": "b"}]
NOT_UTF8 = [0xFF, 0xFE, 0xC0, 0xE9, 0x80]


def _valid_records(rng: random.Random, kind: str, n: int) -> list:
    if kind == "alpaca":
        return [{"instruction": f"Say {i}.", "input": rng.choice(["", f"in {i}"]), "output": f"It is {i}."}
                for i in range(n)]
    return [{"messages": [m for t in range(rng.randint(1, 2)) for m in
                          ({"role": "user", "content": f"Q{i}.{t}"}, {"role": "assistant", "content": f"A{i}.{t}"})]}
            for i in range(n)]


def _mutate(rng: random.Random, record: dict, kind: str):
    """A mutated copy of a valid record, and whether it still makes a training sample."""
    r = copy.deepcopy(record)
    if rng.random() < 0.1:
        return rng.choice([[1, 2], "text", 7, None]), False
    if kind == "alpaca":
        key, op = rng.choice(["instruction", "input", "output"]), rng.choice(["delete", "type", "None", "blank"])
        if op == "delete":
            del r[key]
        else:
            r[key] = {"type": rng.choice(WRONG_TYPES), "None": None, "blank": " "}[op]
        return r, key == "input" and op != "type"  # input may be absent, None or blank; nothing else may
    msgs = r["messages"]
    j = rng.randrange(len(msgs))
    op = rng.choice(["delete messages", "messages type", "delete content", "content type", "bad role",
                     "swap role", "drop last turn", "extra key", "system first"])
    if op == "delete messages":
        del r["messages"]
    elif op == "messages type":
        r["messages"] = rng.choice(["Hi", {"role": "user"}, 5, []])
    elif op == "delete content":
        del msgs[j]["content"]
    elif op == "content type":
        msgs[j]["content"] = rng.choice([*WRONG_TYPES, None, ""])
    elif op == "bad role":
        msgs[j]["role"] = rng.choice(["bot", 3, None])
    elif op == "swap role":
        msgs[j]["role"] = {"user": "assistant", "assistant": "user"}[msgs[j]["role"]]
    elif op == "drop last turn":
        msgs.pop()
    elif op == "extra key":
        msgs[j]["name"] = "x"
    else:
        msgs.insert(0, {"role": "system", "content": "Be brief."})
    return r, op in ("extra key", "system first")


def _fuzz_case(seed: int, tmp_path: Path):
    """(path, records, ok flags, labels, line a damaged file's error must name or None)."""
    rng = random.Random(seed)
    kind, suffix = rng.choice(["alpaca", "chat"]), rng.choice([".jsonl", ".json"])
    records = _valid_records(rng, kind, rng.randint(1, 5))
    ok = [True] * len(records)
    for i in rng.sample(range(len(records)), rng.randint(1, len(records))):
        records[i], ok[i] = _mutate(rng, records[i], kind)
    if suffix == ".jsonl":
        data, labels = _jsonl(*records), [f"line {i + 1}" for i in range(len(records))]
    else:
        data, labels = json.dumps(records, indent=1).encode(), [f"record {i}" for i in range(len(records))]
    damaged = None
    if rng.random() < 0.35:  # damage the bytes: the whole file is refused, naming the damaged line
        inside = [k for k in range(1, len(data)) if data[k - 1] != ord("\n") and data[k] != ord("\n")]
        at = rng.choice(inside)
        damaged = data[:at].count(b"\n") + 1
        data = data[:at] + bytes([rng.choice(NOT_UTF8)]) + data[at:] if rng.random() < 0.5 else data[:at]
    path = tmp_path / f"fuzz{seed}{suffix}"
    path.write_bytes(data)
    return path, records, ok, labels, damaged


def _check_fuzz_case(seed: int, tmp_path: Path) -> str:
    path, records, ok, labels, damaged = _fuzz_case(seed, tmp_path)
    if damaged or not any(ok):
        with pytest.raises(DataError) as e:
            load_file(path)
        message = str(e.value)
        assert "\n" not in message and message.startswith(str(path)), message
        assert (f"line {damaged}" if damaged else labels[0]) in message, (seed, message)
        return "damaged" if damaged else "all bad"
    ds, report = load_file(path)  # some survive: they are kept in order, the others listed with their field
    assert report.dropped.keys() == {label for label, good in zip(labels, ok) if not good}, seed
    assert all(reason.startswith("field '") and "\n" not in reason for reason in report.dropped.values())
    kept = [r for r, good in zip(records, ok) if good]
    assert len(ds) == len(kept)
    for row, r in zip(ds, kept):
        if "messages" in row:
            assert [(m["role"], m["content"]) for m in row["messages"]] == [(m["role"], m["content"])
                                                                             for m in r["messages"]]
        else:
            assert row == {"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]}
    return "some kept"


def test_fuzzed_files_load_or_fail_with_one_line(tmp_path):
    outcomes = [_check_fuzz_case(seed, tmp_path) for seed in range(30)]
    assert {"damaged", "all bad", "some kept"} <= set(outcomes)  # the fuzzer reaches every outcome


def test_fuzzed_files_through_the_cli(tmp_path, tokenizer):
    model = tmp_path / "tiny"
    tiny_llama_for(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)
    cases = [_fuzz_case(seed, tmp_path) for seed in range(30)]
    partial = next(c for c in cases if not c[4] and 0 < sum(c[2]) < len(c[2]))
    failing = next(c for c in cases if not c[4] and not any(c[2]))
    path, _, ok, labels, _ = partial
    r = _cli(path, model, tmp_path / "out", "--max-steps", "1", "--batch-size", "2", "--max-length", "64",
             "--strategy", "dynamic", "--no-progress")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"{sum(ok)}/{len(ok)} records kept" in r.stdout
    for label, good in zip(labels, ok):
        assert (f"dropped {label}, field '" in r.stdout) != good, (label, r.stdout)
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()
    path, _, _, labels, _ = failing
    r = _cli(path, model, tmp_path / "out2")
    assert r.returncode == 2
    _assert_one_line(r.stderr, path, [labels[0]])
