"""unime-v2: MLLM-as-a-Judge hard-negative mining, UniME-V2 embedder and reranker, on the Hugging Face stack.

The repository's top-level folders (the project's design card) are installed under one namespace,
``unime_v2``, so that no generic top-level ``trainers`` package lands in site-packages:

    modeling_unime_v2/  -> unime_v2.modeling_unime_v2   (flat Hub remote code: torch + transformers only)
    trainers/           -> unime_v2.trainers
    data_builders/      -> unime_v2.data_builders
    hub_cards/          -> unime_v2.hub_cards
"""

from setuptools import setup


FOLDERS = ("modeling_unime_v2", "trainers", "data_builders", "hub_cards")
SUBPACKAGES = ("data_builders.mini_mmeb", "data_builders.mining", "data_builders.formats", "trainers.evaluation")

setup(
    name="unime-v2",
    version="0.1.0",
    description="UniME-V2: MLLM-as-a-Judge for universal multimodal embedding learning (reference implementation)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[f"unime_v2.{name}" for name in FOLDERS + SUBPACKAGES],
    package_dir={f"unime_v2.{name}": name for name in FOLDERS},
    package_data={
        "unime_v2.hub_cards": ["*.md"],
        "unime_v2.trainers.evaluation": ["mmeb_precision_at_1/*.py"],
    },
    install_requires=[
        "torch>=2.4",
        "torchvision",  # Qwen-VL processors need a video processor, which needs torchvision
        "transformers>=5.17",
        "tokenizers>=0.21",
        "peft>=0.17",
        "trl>=1.0",
        "datasets>=4.0",
        "accelerate>=1.10",
        "huggingface-hub>=1.0",
        "faiss-cpu>=1.9",
        "evaluate>=0.4",
        "pillow>=10",
        "numpy",
        "pyyaml",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout"],
        "gpu": ["faiss-gpu"],
        "deepspeed": ["deepspeed>=0.16"],
    },
    classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: Apache Software License"],
)
