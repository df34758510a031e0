"""FLOPs of a Keras model, counted from its own layers (kernel shapes and output shapes).

One multiply-add is 2 FLOPs. Only the layers that carry the arithmetic are counted: convolutions
(any rank, grouped, depthwise, separable, transposed) and Dense. BatchNorm, activations, pooling,
resizing and additions are elementwise and memory-bound, a few percent of a CNN's FLOPs; they are
left out, as the usual GMAC figures (InceptionV3: 5.7 GMAC at 299 px, as Keras's and the paper's tables give it) leave
them out.

Training costs about 3x the forward pass (forward, gradient w.r.t. inputs, gradient w.r.t. weights)
for the layers whose weights train. A frozen layer that no trainable layer precedes needs neither
gradient, so it costs 1x: that holds for tlbench's modes, where the frozen backbone comes first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras

TRAIN_FACTOR = 3


@dataclass
class Count:
    forward: int = 0  # FLOPs per image, forward pass
    train: int = 0  # FLOPs per image, one training step (forward and backward)
    uncounted: list[str] = field(default_factory=list)  # layers with weights this module cannot count


def _prod(shape) -> int:
    return math.prod(int(d) for d in shape)


def _macs(layer) -> int | None:
    """Multiply-adds per image, or None for a layer type this counter does not know."""
    L = keras.layers
    out = tuple(layer.output.shape[1:])
    if isinstance(layer, L.Dense):  # kernel (in, units); leading non-batch dims repeat it
        return _prod(out) * int(layer.kernel.shape[0])
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        # every input element scatters into kernel (k..., out, in) / in outputs
        return _prod(layer.input.shape[1:]) * _prod(layer.kernel.shape[:-1])
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        k = layer.depthwise_kernel.shape  # (k..., in, multiplier)
        spatial = _prod(out[:-1])
        return spatial * _prod(k) + spatial * int(k[-2] * k[-1]) * int(out[-1])
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):  # kernel (k..., in, multiplier)
        return _prod(out) * _prod(layer.kernel.shape[:-2])
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):  # kernel (k..., in / groups, filters)
        return _prod(out) * _prod(layer.kernel.shape[:-1])
    return None


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model (the backbone)
            yield from _layers(layer)
        else:
            yield layer


def count(model: keras.Model) -> Count:
    c = Count()
    for layer in _layers(model):
        macs = _macs(layer)
        if macs is None:
            if layer.weights and not isinstance(layer, (keras.layers.BatchNormalization,
                                                        keras.layers.LayerNormalization)):
                c.uncounted.append(layer.name)
            continue
        c.forward += 2 * macs
        c.train += 2 * macs * (TRAIN_FACTOR if layer.trainable_weights else 1)
    return c


def epoch_flops(c: Count, train_images: int, val_images: int) -> int:
    """One epoch as tlbench times it: a training pass plus a forward-only validation pass."""
    return c.train * train_images + c.forward * val_images

