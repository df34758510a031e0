"""The Keras model of one run: uint8 images -> resize -> normalise -> [augment] -> backbone (cut, partly
frozen) -> head; and how it is compiled for each stage of its recipe (recipes.py).

Resizing and normalisation are layers, so they run on the accelerator in the compiled step
under any Keras backend, and the input pipeline only moves uint8 batches. The frozen-cached mode
splits the same model in two: the trunk (`feature_extractor`, run once, see features.py) and the
head (`build_head`), built by the same code as every other mode's head.
"""
from __future__ import annotations

import functools
import time
from contextlib import contextmanager

import keras
import numpy as np

from . import finetune, recipes
from .backbones import BACKBONES
from .config import RunConfig
from .datasets import DATASETS
from .modes import MODES
from .preprocessing import Normalize
from .weights import build_backbone, preprocessing


def build(config: RunConfig, image_shape: tuple[int, int, int], classes: int) -> keras.Model:
    inputs, features = _trunk(config, image_shape)
    return keras.Model(inputs, head(features, config.head, classes), name=f"{config.backbone}_{config.mode}")


def feature_extractor(config: RunConfig, image_shape: tuple[int, int, int]) -> keras.Model:
    """The frozen trunk alone, images -> pooled features: what the frozen-cached mode computes once."""
    inputs, features = _trunk(config, image_shape)
    return keras.Model(inputs, features, name=f"{config.backbone}_features")


def build_head(config: RunConfig, feature_shape: tuple[int, ...], classes: int) -> keras.Model:
    """The head alone, on cached features: the same layers `build` puts after the pooling."""
    keras.config.set_dtype_policy(config.precision)
    inputs = keras.Input(feature_shape, name="features")
    return keras.Model(inputs, head(inputs, config.head, classes), name=f"{config.backbone}_{config.mode}")


def _trunk(config: RunConfig, image_shape: tuple[int, int, int]):
    """uint8 images -> resize -> normalise -> backbone -> pooling; (inputs, pooled features)."""
    keras.config.set_dtype_policy(config.precision)
    backbone_spec = BACKBONES.get(config.backbone)
    mode = MODES.get(config.mode)
    backbone = finetune.cut(build_backbone(backbone_spec, config.weights, config.input_size, mode.pretrained),
                            backbone_spec, config.cut)
    finetune.set_trainable(backbone, backbone_spec, config)

    inputs = keras.Input(image_shape, dtype="uint8", name="images")
    x = inputs
    if image_shape[:2] != (config.input_size, config.input_size):
        x = keras.layers.Resizing(config.input_size, config.input_size, name="resize")(x)
    x = Normalize(preprocessing(backbone_spec, config.weights), name="normalize")(x)
    if recipes.resolve(config)[0].augment == "light":
        # Keras's preprocessing layers act only while training, on the device, under every backend.
        if DATASETS.get(config.dataset_params["type"]).mirrors:
            x = keras.layers.RandomFlip("horizontal", name="random_flip")(x)
        x = keras.layers.RandomTranslation(recipes.TRANSLATE, recipes.TRANSLATE, name="random_translation")(x)
    # No training=False here: under fit Keras 3 would overwrite it (finetune.py says what holds instead).
    x = backbone(x)
    pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
            "flatten": keras.layers.Flatten}[config.head["pooling"]]
    return inputs, pool(name="pool")(x)


def head(x, spec: dict, classes: int):
    """The new classifier on pooled features: [dropout] -> dense ... -> softmax (suite key `head`)."""
    for i, units in enumerate(spec["dense"]):
        if spec["dropout"]:
            x = keras.layers.Dropout(spec["dropout"], name=f"dropout_{i}")(x)
        x = keras.layers.Dense(units, activation=spec["activation"], name=f"dense_{i}")(x)
    if spec["dropout"]:
        x = keras.layers.Dropout(spec["dropout"], name="dropout_out")(x)
    # Softmax in float32 even under mixed precision, as Keras's mixed-precision guide advises.
    return keras.layers.Dense(classes, activation="softmax", dtype="float32", name="predictions")(x)


def compile(model: keras.Model, config: RunConfig, stage: recipes.Stage, steps_per_epoch: int) -> None:
    """Compile for one stage: the suite's optimizer at the stage's learning rate, under the recipe's schedule,
    decoupled weight decay (Adam with it is AdamW) and label smoothing."""
    recipe, _ = recipes.resolve(config)
    rate = stage.learning_rate
    if recipe.schedule == "warmup-cosine":
        steps = stage.epochs * steps_per_epoch
        warmup = max(1, round(recipes.WARMUP * steps))
        rate = keras.optimizers.schedules.CosineDecay(0.0, max(1, steps - warmup), warmup_target=stage.learning_rate,
                                                      warmup_steps=warmup)
    decay = {"weight_decay": recipe.weight_decay} if recipe.weight_decay else {}
    optimizer = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
                 "rmsprop": keras.optimizers.RMSprop}[config.optimizer](learning_rate=rate, **decay)
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing) if recipe.label_smoothing
            else config.loss)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit_compile(config),
                  steps_per_execution=config.steps_per_execution)


def enter_stage(model: keras.Model, config: RunConfig, stage: recipes.Stage) -> None:
    """Set what trains in this stage: the head alone (the whole backbone frozen, BatchNorm included), or the
    layers `unfreeze` names. Keras needs a compile after this; `compile` follows."""
    for backbone in (layer for layer in model.layers if isinstance(layer, keras.Model)):  # none: cached features
        if stage.trains == "head":
            backbone.trainable = False
        else:
            finetune.set_trainable(backbone, BACKBONES.get(config.backbone), config)


# Validation images the BatchNorm check scores: enough that a batch-statistics lead of 20 points or more over the
# moving statistics (a model at chance against one that learnt) stands far outside its binomial noise (about
# 9 points at 50 %, 95 %), and few enough to cost seconds after a run of minutes.
BATCHNORM_SAMPLE = 256


def batchnorm_check(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict | None:
    """Accuracy of the first BATCHNORM_SAMPLE validation images scored twice: with BatchNorm's moving statistics
    (inference, as `evaluate` does) and with the statistics of each batch, as the training steps normalised;
    None when no BatchNorm layer trains (a frozen one uses its moving statistics in training too).

    The model is called with training=False both times, so dropout and augmentation stay off and only the
    trained BatchNorm layers change what they normalise by; no variable is written (Keras's own
    training=True would update the moving statistics, and a nested training=False is overwritten:
    keras-team/keras#20285)."""
    layers = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)
              and layer.trainable]
    if not layers:
        return None
    t = time.perf_counter()
    # Whole batches only: the statistics of a short last batch would be noisier than training's.
    n = max(min(BATCHNORM_SAMPLE, len(x)) // batch_size * batch_size, min(batch_size, len(x)))
    moving = _accuracy(model, x[:n], y[:n], batch_size)
    with _batch_statistics(layers):
        batch = _accuracy(model, x[:n], y[:n], batch_size)
    return {"images": n, "batch_size": batch_size, "batchnorm_layers": len(layers), "moving_accuracy": moving,
            "batch_accuracy": batch, "seconds": time.perf_counter() - t}


def _layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    hits = 0
    for i in range(0, len(x), batch_size):
        p = keras.ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
        hits += int((p.argmax(-1) == y[i:i + batch_size]).sum())
    return hits / len(x)


@contextmanager
def _batch_statistics(layers: list):
    """These BatchNorm layers normalise by each batch's own statistics for as long as the block runs."""
    for layer in layers:
        layer.call = functools.partial(_normalise_by_batch, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.call  # the class's own call again


def _normalise_by_batch(layer, inputs, training=None, mask=None):
    """BatchNormalization.call's training branch without its update of the moving statistics."""
    ops = keras.ops
    x = ops.cast(inputs, "float32")  # as Keras's own layer, which upcasts float16 inputs
    axis = layer.axis % len(x.shape)
    mean, variance = ops.moments(x, axes=[i for i in range(len(x.shape)) if i != axis])
    scale = ops.cast(layer.gamma, x.dtype) if layer.scale else None
    offset = ops.cast(layer.beta, x.dtype) if layer.center else None
    out = ops.batch_normalization(x, mean, variance, axis=axis, offset=offset, scale=scale, epsilon=layer.epsilon)
    return ops.cast(out, layer.compute_dtype)


def jit_compile(config: RunConfig):
    return {"auto": "auto", "on": True, "off": False}[config.jit_compile]


def parameter_counts(model: keras.Model) -> dict:
    count = lambda ws: int(sum(keras.ops.size(w) for w in ws))  # noqa: E731
    return {"trainable": count(model.trainable_weights), "non_trainable": count(model.non_trainable_weights)}
