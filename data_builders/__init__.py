"""Data for the method: the generated benchmark (``mini_mmeb``), hard-negative mining (``mining``), the data
formats (``formats``) and the tiny offline backbones every test and demo runs on (docs/architecture.md)."""

from .tiny_backbones import BACKBONE_KINDS, build_tiny_backbone, load_tiny_backbone


__all__ = ["BACKBONE_KINDS", "build_tiny_backbone", "load_tiny_backbone"]
