"""Shared fixtures. Tests run against the offline profile and never touch the hub."""
import os
import shutil
from pathlib import Path

os.environ.setdefault("FTLIB_PROFILE", "offline")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from ftlib.models import load_model, load_tokenizer  # noqa: E402
from ftlib.tiny import tiny_llama_for  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (loads in well under a second)."""
    return load_tokenizer("instruct")


@pytest.fixture()
def tiny_model(tokenizer):
    return tiny_llama_for(tokenizer)


@pytest.fixture(scope="session")
def instruct():
    """The real offline instruct model (fp32) and its tokenizer: only for tests that need a trained model."""
    torch.manual_seed(0)
    return load_model("instruct", dtype=torch.float32)


@pytest.fixture(scope="session")
def base():
    return load_model("base", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_course(tmp_path_factory):
    """A copy of the course folder (notebooks 01, 05, 06, 08, 09 and the configs) where notebook 05 has been executed
    under the ``tiny`` profile, its model saved in ``notebooks/outputs/sft-chat-tiny/final`` for 06-09. Returns that
    notebooks folder and the executed 05. Shared, as each execution costs a kernel start-up; a copy, so that nothing
    is written into the repository's notebooks/ while nbval runs them."""
    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    home = tmp_path_factory.mktemp("course")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    (home / "configs").symlink_to(root / "configs")  # the notebooks read ../configs/sft-chat.yaml
    for name in ("01_generation.ipynb", "05_sft.ipynb", "06_chat.ipynb", "08_dpo.ipynb", "09_evaluate.ipynb",
                 "10_pad_eos.ipynb"):
        shutil.copy(root / "notebooks" / name, notebooks / name)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("FTLIB_PROFILE", "tiny")
        m.setenv("PYTHONPATH", str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        nb = nbformat.read(notebooks / "05_sft.ipynb", as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(notebooks)}}).execute()
    assert (notebooks / "outputs" / "sft-chat-tiny" / "final" / "config.json").exists(), "05 (tiny) saved no model"
    return notebooks, nb
