"""Small models shared by tests (importable by test files and by their torchrun workers)."""
from __future__ import annotations

from models import FERModel, build_head, create_backbone


def small_swin(img_size: int = 32, num_classes: int = 7, head: str = "cam") -> FERModel:
    """The registered ``swin_t`` (timm Swin, patch 2, window 7) at a quarter width and half depth:
    the same LayerNorm/window-attention code as MEK's Swin-T, ~20x cheaper to run in a test."""
    # timm's Swin defaults to drop_path_rate 0.1 (random per sample in train mode); 0 makes a
    # train-mode step deterministic.
    body = create_backbone("swin_t", img_size=img_size, embed_dim=24, depths=(1, 1, 2, 1),
                           num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
    return FERModel(body, build_head(head, body.num_features, num_classes), num_classes)
