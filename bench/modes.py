"""What each training mode does to a backbone.

A mode is data: whether the backbone starts from pretrained weights and whether its weights
train. How deep training reaches and what BatchNorm does are the settings `unfreeze` and
`batchnorm` (finetune.py), whose defaults follow the mode; a suite names variants of a mode
(a strategy such as "top blocks fine-tuned") under its `modes:` key.
"""
from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class Mode:
    name: str
    label: str  # the documents' wording, used in tables
    pretrained: bool
    trainable: bool
    # The frozen trunk's pooled features are computed once and cached (features.py); only the head
    # trains, on them. The epochs then time the head alone; the extraction is recorded apart.
    cached_features: bool = False


MODES: Registry[Mode] = Registry("mode")
for _m in [
    Mode("frozen", "Frozen weights", pretrained=True, trainable=False),
    Mode("unfrozen", "Unfrozen weights", pretrained=True, trainable=True),
    Mode("scratch", "No pre-trained weights", pretrained=False, trainable=True),
    Mode("frozen-cached", "Frozen, cached features", pretrained=True, trainable=False,
         cached_features=True),
]:
    MODES.register(_m.name, _m)
