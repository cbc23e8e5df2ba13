"""UniME-V2 models as flat Hub remote code: they import only torch, transformers and each other."""

from .configuration_unime_v2 import IMAGE_MARKER, SUPPORTED_BACKBONES, UniMEV2Config
from .modeling_unime_v2 import (
    UniMEV2Model,
    UniMEV2Output,
    UniMEV2PreTrainedModel,
    cosine_similarity,
    last_token_indices,
    official_position_ids,
)
from .processing_unime_v2 import UniMEV2Processor, load_item_image

__all__ = [
    "IMAGE_MARKER",
    "SUPPORTED_BACKBONES",
    "UniMEV2Config",
    "UniMEV2Model",
    "UniMEV2Output",
    "UniMEV2PreTrainedModel",
    "UniMEV2Processor",
    "cosine_similarity",
    "last_token_indices",
    "load_item_image",
    "official_position_ids",
]
