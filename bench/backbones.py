"""Backbone presets as plain data: which keras.applications constructor, what input it wants.

`preprocessing` names an entry of `preprocessing.PRESETS`: the normalisation the ImageNet
weights were trained with. A weights source may replace it (torchvision's file wants its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import Registry


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications
    default_size: int
    min_size: int
    preprocessing: str
    kwargs: dict = field(default_factory=dict)

    def build(self, input_size: int, weights: str | None, include_top: bool = False):
        import keras

        make = getattr(keras.applications, self.constructor)
        shape = (input_size, input_size, 3)
        return make(weights=weights, include_top=include_top, input_shape=shape, **self.kwargs)


BACKBONES: Registry[Backbone] = Registry("backbone")

for _b in [
    # Keras's minimum input sizes (keras.applications' obtain_input_shape).
    Backbone("inception_v3", "InceptionV3", 299, 75, "inception"),
    Backbone("vgg16", "VGG16", 224, 32, "caffe"),
    Backbone("vgg19", "VGG19", 224, 32, "caffe"),
    Backbone("resnet50", "ResNet50", 224, 32, "caffe"),
    Backbone("mobilenet_v2", "MobileNetV2", 224, 32, "inception"),
    # A 0.35-width MobileNetV2: the real architecture at a size tests can train in seconds.
    Backbone("mobilenet_v2_035", "MobileNetV2", 224, 32, "inception", {"alpha": 0.35}),
    # EfficientNet rescales and normalises inside the network: it takes raw 0..255 pixels.
    Backbone("efficientnet_b0", "EfficientNetB0", 224, 32, "raw"),
]:
    BACKBONES.register(_b.name, _b)
