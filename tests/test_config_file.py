"""Config files and flags (ftlib.config_file): every problem is a ConfigError, never a SystemExit carrying a
message; ``--help`` still exits 0; the resume flags live in TrainConfig and never count as a config change."""
import dataclasses

import pytest

from ftlib.config import ConfigError, TrainConfig, check_resume, run_record, write_run_record
from ftlib.sft import load_config, main, parse_config


@pytest.mark.parametrize("argv, yaml_text, words", [
    (["--bogus"], None, "unrecognized arguments: --bogus"),
    (["--max-steps", "ten"], None, "argument --max-steps/--max_steps: invalid int value: 'ten'"),
    (["--max-steps"], None, "expected one argument"),
    (["--schedule", "cosin"], None, "schedule 'cosin': choose one of cosine, linear, constant"),
    ([], "a: [\n", "not valid YAML at line 2; fix the file there"),
    ([], "- 1\n", "expected key: value pairs, got a list"),
    ([], "train: 3\n", "'train' must hold key: value pairs"),
    ([], "profiles: {gpu: {}}\n", "profiles: gpu is not a profile; use offline, hub-cpu, hub-gpu, tiny"),
    ([], "modle: x\n", "unknown config keys: modle (did you mean model?)"),
])
def test_every_config_problem_is_a_config_error(tmp_path, argv, yaml_text, words):
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = ["--config", str(tmp_path / "c.yaml"), *argv]
    with pytest.raises(ConfigError) as caught:
        parse_config(argv)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_is_a_config_error_from_load_config_too(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot be read \(No such file or directory\); check the"):
        load_config(tmp_path / "nope.yaml")


def test_help_still_exits_0_and_lists_the_resume_flags(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "--resume, --no-resume" in out and "--resume-force" in out and "(implies --resume)" in out


def test_a_bad_flag_through_main_is_one_line_and_exit_2(capsys):
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --bogus\n"


def test_yaml_values_go_through_the_flags_types(tmp_path):
    """The YAML gives the flags' defaults, so a quoted number is read as the flag would read it."""
    (tmp_path / "c.yaml").write_text('max_steps: "9"\nlearning_rate: 1e-4\nresume: true\n')
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.train.max_steps, cfg.train.learning_rate, cfg.train.resume) == (9, 1e-4, True)


@pytest.mark.parametrize("argv, resume, force", [([], False, False), (["--resume"], True, False),
                                                 (["--resume-force"], True, True),
                                                 (["--resume-force", "--no-resume"], True, True)])
def test_the_resume_flags_set_train_resume_and_force_implies_resume(argv, resume, force):
    cfg = parse_config(argv)
    assert (cfg.train.resume, cfg.train.resume_force) == (resume, force)
    assert "resume" not in dataclasses.asdict(cfg)  # one place for it: the loop's config


def test_resume_force_implies_resume_in_train_config():
    assert TrainConfig(resume_force=True).resume
    assert not TrainConfig().resume
    with pytest.raises(ConfigError, match="resume='yes': expected true or false"):
        TrainConfig(resume="yes")


def test_the_resume_flags_are_not_a_config_change(tmp_path):
    """Resuming a run means passing --resume this time: the check must not count that as another config."""
    write_run_record(tmp_path, run_record(dataclasses.asdict(TrainConfig(output_dir=str(tmp_path)))))
    again = TrainConfig(output_dir=str(tmp_path), resume=True, resume_force=True)
    assert check_resume(tmp_path, dataclasses.asdict(again)) == {}
    other = TrainConfig(output_dir=str(tmp_path), resume=True, max_steps=3)
    assert check_resume(tmp_path, dataclasses.asdict(other), force=True) == {"max_steps": [None, 3]}
