"""Backbone presets as plain data: which keras.applications constructor, what input it wants,
where it can be cut and what its blocks are.

`preprocessing` names an entry of `preprocessing.PRESETS`: the normalisation the ImageNet
weights were trained with. A weights source may replace it (torchvision's file wants its own).

`cuts` names the layers the suite key `cut: early | middle | late` truncates at: the ends of the
early, middle and late stages, so the head sees generic (early) or more dataset-specific (late)
features. `blocks` is a regular expression over layer names that finds the network's repeated blocks
for `unfreeze: last N blocks` (finetune.py): with a group, consecutive layers with the same group
value are one block (MobileNetV2's `block_7_*`); without, each match ENDS a block (InceptionV3's
`mixed5` concatenation closes the layers before it).
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
    cuts: dict = field(default_factory=dict)
    blocks: str = ""
    kwargs: dict = field(default_factory=dict)

    def build(self, input_size: int, weights: str | None, include_top: bool = False):
        import keras

        make = getattr(keras.applications, self.constructor)
        shape = (input_size, input_size, 3)
        return make(weights=weights, include_top=include_top, input_shape=shape, **self.kwargs)


BACKBONES: Registry[Backbone] = Registry("backbone")

_MOBILENET_V2 = {"cuts": {"early": "block_6_expand_relu", "middle": "block_13_expand_relu",
                           "late": "block_16_project_BN"}, "blocks": r"^(block_\d+)_"}
_VGG = {"cuts": {"early": "block3_pool", "middle": "block4_pool", "late": "block5_conv2"}, "blocks": r"^(block\d)_"}

for _b in [
    # Keras's minimum input sizes (keras.applications' obtain_input_shape).
    Backbone("inception_v3", "InceptionV3", 299, 75, "inception",
             cuts={"early": "mixed2", "middle": "mixed5", "late": "mixed7"}, blocks=r"^mixed\d+$"),
    Backbone("vgg16", "VGG16", 224, 32, "caffe", **_VGG),
    Backbone("vgg19", "VGG19", 224, 32, "caffe", **_VGG),
    Backbone("resnet50", "ResNet50", 224, 32, "caffe",
             cuts={"early": "conv3_block4_out", "middle": "conv4_block6_out", "late": "conv5_block2_out"},
             blocks=r"^(conv\d_block\d+)_"),
    Backbone("mobilenet_v2", "MobileNetV2", 224, 32, "inception", **_MOBILENET_V2),
    # A 0.35-width MobileNetV2: the real architecture at a size tests can train in seconds.
    Backbone("mobilenet_v2_035", "MobileNetV2", 224, 32, "inception", **_MOBILENET_V2, kwargs={"alpha": 0.35}),
    # EfficientNet rescales and normalises inside the network: it takes raw 0..255 pixels.
    Backbone("efficientnet_b0", "EfficientNetB0", 224, 32, "raw",
             cuts={"early": "block3b_add", "middle": "block5c_add", "late": "block6d_add"},
             blocks=r"^(block\d[a-z])_"),
]:
    BACKBONES.register(_b.name, _b)
