"""Configuration of the UniME-V2 embedder (Hub remote code: imports only transformers)."""

from __future__ import annotations

import re

from transformers import AutoConfig, PretrainedConfig


SUPPORTED_BACKBONES = ("qwen2_vl", "qwen2_5_vl", "llava_onevision")
MROPE_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
BACKBONE_NO_SPLIT_MODULES = (
    "Qwen2VLDecoderLayer",
    "Qwen2_5_VLDecoderLayer",
    "Qwen2DecoderLayer",
    "Qwen2VLVisionBlock",
    "Qwen2_5_VLVisionBlock",
    "SiglipEncoderLayer",
)
"""Blocks of the supported backbones that device-map sharding keeps whole (embedder and reranker alike)."""
"""Backbones with Qwen-VL's multimodal rotary positions (M-RoPE) and pixel-budget image processors."""
PROMPT_FORMATS = ("official", "chat")
MARKER_POLICIES = ("image_token", "error")
IMAGE_MARKER = "<|image_1|>"
IMAGE_MARKER_PATTERN = re.compile(r"<\|image_\d+\|>")
"""MMEB's image markers (``<|image_1|>``, …) wherever text is read: the processor, mining, the judge's pairs."""


def strip_image_markers(text: str | None) -> str:
    """``text`` without its image markers (nor the newline after each), surrounding whitespace stripped."""
    return re.sub(IMAGE_MARKER_PATTERN.pattern + r"\n?", "", text or "").strip()


EVAL_RESOLUTIONS = {"high": 1344, "low": 336, "checkpoint": None}
"""Evaluation image sizes (square resize, pixels per side); ``checkpoint`` keeps the training setting."""


def eval_image_resize(config: UniMEV2Config) -> int | None:
    """The ``image_resize`` to evaluate ``config``'s model with (its ``eval_resolution``; docs/method.md §4)."""
    size = EVAL_RESOLUTIONS[config.eval_resolution]
    return config.image_resize if size is None else size


def check_truncate_dim(truncate_dim: int | None, hidden_size: int) -> None:
    """Refuse a ``truncate_dim`` outside ``1 … hidden_size`` (``None``: no truncation)."""
    if truncate_dim is None:
        return
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int):
        raise TypeError(f"truncate_dim must be an int or None, got {truncate_dim!r}")
    if not 1 <= truncate_dim <= hidden_size:
        raise ValueError(f"truncate_dim={truncate_dim} is outside 1 … {hidden_size} (the embedding dimension)")


class UniMEV2Config(PretrainedConfig):
    r"""Configuration of :class:`UniMEV2Model`: a vision-language backbone whose last-token hidden state is the embedding.

    Args:
        backbone_config (`dict` or `PretrainedConfig`): the config of the wrapped VLM (Qwen2-VL, Qwen2.5-VL or
            LLaVA-OneVision), nested as a sub-config so the checkpoint is self-contained.
        pooling (`str`): only ``"last"`` (the last non-padding token), as in the paper.
        normalize (`bool`): L2-normalise the embedding, so that a dot product is the cosine.
        tau (`float`): the temperature of the training objective (named ``tau``, since ``temperature`` is a
            generation parameter that ``save_pretrained`` refuses on a model config).
        prompt_format (`str`): ``"official"`` feeds what the released checkpoints were trained on (Qwen-VL: raw text
            with ``<|image_1|>`` replaced by ``<|image_pad|>``, no chat template, 1-D positions; LLaVA-OneVision: the
            chat template with a generation prompt); ``"chat"`` uses the chat template with vision delimiters.
        image_resize (`int`, *optional*): resize every image to ``image_resize``² first (the authors' "mid" is 672,
            "high" 1344, "mid_336" 336); ``None`` keeps the image size and only applies the pixel budget.
        min_pixels, max_pixels (`int`, *optional*): the Qwen-VL processor's pixel budget per image.
        padding_side (`str`): ``"left"`` (authors) or ``"right"``; pooling is correct for both.
        max_length (`int`, *optional*): truncate longer inputs (tokens); ``None`` never truncates.
        marker_without_image (`str`): what an item whose text has an image marker but which has no image becomes
            (MMEB-train's WebQA queries carry ``<|image_1|>`` with an empty path). ``"image_token"`` (default,
            what produced the released checkpoints): the marker becomes the backbone's image token as a plain text
            token, with no pixels; ``"error"``: refuse the item.
        eval_resolution (`str`, *optional*): the image size used when evaluating: ``"high"`` (1344², what the
            authors evaluated every checkpoint with; the default), ``"low"`` (336²) or ``"checkpoint"`` (the
            training ``image_resize`` and pixel budget). See :func:`eval_image_resize`.
        query_instruction, candidate_instruction (`str`): the instructions :meth:`UniMEV2Model.encode_query` and
            :meth:`UniMEV2Model.encode_document` put before an input when called without ``instruction=``, in
            MMEB's layout ``<|image_1|>\n{instruction} {text}\n`` (docs/architecture.md, "Using the model").
            ``""`` (default): no instruction; MMEB's text candidates are bare and an image alone gets ``Represent
            the given image.``.
            :meth:`UniMEV2Model.encode` never reads them: MMEB items carry their instruction inside the text.
        truncate_dim (`int`, *optional*): the default of :meth:`UniMEV2Model.encode`'s ``truncate_dim``: keep the
            first ``truncate_dim`` dimensions of each embedding, before L2 normalisation; ``None`` keeps all.
    """

    model_type = "unime_v2"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        pooling: str = "last",
        normalize: bool = True,
        tau: float = 0.02,
        prompt_format: str = "official",
        image_resize: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        padding_side: str = "left",
        max_length: int | None = None,
        marker_without_image: str = "image_token",
        eval_resolution: str = "high",
        query_instruction: str = "",
        candidate_instruction: str = "",
        truncate_dim: int | None = None,
        **kwargs,
    ):
        if isinstance(backbone_config, dict):
            model_type = backbone_config.get("model_type")
            if model_type not in SUPPORTED_BACKBONES:
                raise ValueError(
                    f"unsupported backbone model_type {model_type!r}; UniME-V2 supports {SUPPORTED_BACKBONES}"
                )
            backbone_config = AutoConfig.for_model(**backbone_config)
        elif backbone_config is not None and backbone_config.model_type not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"unsupported backbone model_type {backbone_config.model_type!r}; "
                f"UniME-V2 supports {SUPPORTED_BACKBONES}"
            )
        if pooling != "last":
            raise ValueError(f"pooling={pooling!r} is not supported; UniME-V2 pools the last token ('last')")
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format={prompt_format!r}; choose one of {PROMPT_FORMATS}")
        if marker_without_image not in MARKER_POLICIES:
            raise ValueError(f"marker_without_image={marker_without_image!r}; choose one of {MARKER_POLICIES}")
        if eval_resolution not in EVAL_RESOLUTIONS:
            raise ValueError(f"eval_resolution={eval_resolution!r}; choose one of {tuple(EVAL_RESOLUTIONS)}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; choose 'left' or 'right'")
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.normalize = normalize
        self.tau = tau
        self.prompt_format = prompt_format
        self.image_resize = image_resize
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.padding_side = padding_side
        self.max_length = max_length
        self.marker_without_image = marker_without_image
        self.eval_resolution = eval_resolution
        self.query_instruction = query_instruction
        self.candidate_instruction = candidate_instruction
        self.truncate_dim = truncate_dim
        super().__init__(**kwargs)
        if backbone_config is not None and truncate_dim is not None:
            check_truncate_dim(truncate_dim, self.hidden_size)

    @property
    def backbone_type(self) -> str:
        """The wrapped backbone's ``model_type`` (``qwen2_vl``, ``qwen2_5_vl`` or ``llava_onevision``)."""
        return self.backbone_config.model_type

    @property
    def hidden_size(self) -> int:
        """The embedding dimension: the backbone language model's hidden size."""
        return self.backbone_config.get_text_config().hidden_size

    @property
    def uses_mrope(self) -> bool:
        """Qwen-VL backbones use multimodal RoPE, whose positions the official format replaces by 1-D positions."""
        return self.backbone_type in MROPE_MODEL_TYPES
