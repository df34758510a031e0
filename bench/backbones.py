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

    def build(self, input_size: int, weights: str | None, include_top: bool = False, padding: str = "keras",
              **kwargs):
        """The keras.applications network; `padding="symmetric"` pads its strided convolutions as torch does
        (`symmetric_padding`), for weights trained that way. kwargs go to the constructor."""
        import keras

        make = getattr(keras.applications, self.constructor)
        shape = (input_size, input_size, 3)
        model = make(weights=weights, include_top=include_top, input_shape=shape, **self.kwargs, **kwargs)
        return symmetric_padding(model) if padding == "symmetric" else model


def symmetric_padding(model):
    """The same network with every strided convolution padded by kernel // 2 on all four sides, as torch's
    Conv2d(padding=k // 2) does. Keras pads a strided convolution on an even input at the bottom and right
    only (TensorFlow's "same"; keras.applications' `correct_pad`), so weights trained in torch would see
    every stride-2 stage shifted by a pixel. Same layers and names (plus `<conv>_pad` before a strided
    "same" convolution, which becomes "valid"), new weights: load them afterwards."""
    import keras

    conv = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)

    def strided_same(layer) -> bool:
        return isinstance(layer, conv) and layer.padding == "same" and max(layer.strides) > 1

    padded = {layer.name: layer.kernel_size for layer in model.layers if strided_same(layer)}

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            config["padding"] = tuple((max(side),) * 2 for side in config["padding"])
        elif layer.name in padded:
            config["padding"] = "valid"
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in padded:
            pad = tuple((k // 2, k // 2) for k in padded[layer.name])
            args = (keras.layers.ZeroPadding2D(pad, name=f"{layer.name}_pad")(args[0]), *args[1:])
        return layer(*args, **kwargs)

    # clone_model would name the new input after its tensor ("keras_tensor_1856"): keep the layer's name
    inputs = keras.Input(batch_shape=model.input.shape, dtype=model.input.dtype, name=model.layers[0].name)
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=clone, call_function=call)


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
