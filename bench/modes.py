"""What each training mode does to a backbone.

A mode is data: whether the backbone starts from pretrained weights, whether its weights
train, and whether its BatchNormalization layers run in training mode. A new mode (partial
unfreezing) is one more entry here plus whatever it needs in `model.py`.
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
    # Keras's transfer-learning guide: a frozen backbone must keep BatchNormalization in
    # inference mode, or its moving statistics drift towards the new data and wreck the features.
    batchnorm_training: bool
    # The frozen trunk's pooled features are computed once and cached (features.py); only the head
    # trains, on them. The epochs then time the head alone; the extraction is recorded apart.
    cached_features: bool = False


MODES: Registry[Mode] = Registry("mode")
for _m in [
    Mode("frozen", "Frozen weights", pretrained=True, trainable=False, batchnorm_training=False),
    Mode("unfrozen", "Unfrozen weights", pretrained=True, trainable=True, batchnorm_training=True),
    Mode("scratch", "No pre-trained weights", pretrained=False, trainable=True, batchnorm_training=True),
    Mode("frozen-cached", "Frozen, cached features", pretrained=True, trainable=False, batchnorm_training=False,
         cached_features=True),
]:
    MODES.register(_m.name, _m)
