"""Input normalisation as one Keras layer, so it runs on the accelerator under any backend.

Every preset is a per-channel affine map, optionally after an RGB->BGR flip:
  inception (Keras's "tf" mode):  x / 127.5 - 1
  caffe (VGG, ResNet50):          BGR, minus the ImageNet channel means
  torch (torchvision weights):    (x / 255 - mean) / std
  raw (EfficientNet):             unchanged
"""
from __future__ import annotations

import keras
import numpy as np

# torchvision's ImageNet channel statistics, on the 0..1 scale.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
_MEAN, _STD = np.array(TORCHVISION_MEAN), np.array(TORCHVISION_STD)

# name -> (scale, offset, bgr): y = x * scale + offset, per channel, in the output channel order.
PRESETS = {
    "inception": ([1 / 127.5] * 3, [-1.0] * 3, False),
    "caffe": ([1.0] * 3, [-103.939, -116.779, -123.68], True),
    "torch": (list(1 / (255 * _STD)), list(-_MEAN / _STD), False),
    "raw": ([1.0] * 3, [0.0] * 3, False),
}


@keras.saving.register_keras_serializable("tlbench")
class Normalize(keras.layers.Layer):
    def __init__(self, preset: str, **kwargs):
        super().__init__(**kwargs)
        self.preset = preset
        scale, offset, self.bgr = PRESETS[preset]
        self.scale = np.asarray(scale, "float32")
        self.offset = np.asarray(offset, "float32")

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        if self.bgr:
            x = keras.ops.flip(x, axis=-1)
        return x * keras.ops.cast(self.scale, x.dtype) + keras.ops.cast(self.offset, x.dtype)

    def get_config(self):
        return {**super().get_config(), "preset": self.preset}
