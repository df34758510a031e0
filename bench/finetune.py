"""Which part of the backbone a run uses and trains: the cut, the fine-tuning depth, the BatchNorm policy.

  cut:       LAYER | early | middle | late      the backbone ends at that layer (backbones.py presets)
  unfreeze:  none | all | last N blocks | from LAYER
  batchnorm: frozen | train

BatchNorm is frozen by its own `trainable` flag, not by calling the backbone with `training=False`:
Keras 3's Functional.call overwrites a nested call's recorded `training` with the outer value under
`fit` (keras-team/keras#20285), while BatchNormalization updates its moving statistics only when
`training and self.trainable`, on every backend. A frozen BatchNorm layer therefore runs in inference
mode and keeps its scale and offset too, which is what Keras's transfer-learning guide does.
tests/test_finetune.py checks the statistics after a real `fit`.
"""
from __future__ import annotations

import difflib
import re
from functools import lru_cache

from .backbones import BACKBONES, Backbone
from .modes import MODES
from .recipes import applied

UNFREEZE_FORMS = "none, all, 'last N blocks' or 'from LAYER'"
BATCHNORM = ("frozen", "train")


def parse_unfreeze(v) -> str:
    """The suite value, normalised ('last 1 block' -> 'last 1 blocks'); ValueError if malformed."""
    text = " ".join(str(v).split()) if isinstance(v, str) else None
    if text in ("none", "all"):
        return text
    m = re.fullmatch(r"last (\d+) blocks?", text or "")
    if m and int(m.group(1)) >= 1:
        return f"last {int(m.group(1))} blocks"
    m = re.fullmatch(r"from (\S+)", text or "")
    if m:
        return text
    raise ValueError(f"expected {UNFREEZE_FORMS}, got {v!r}")


def default_unfreeze(mode: str) -> str:
    return "all" if MODES.get(mode).trainable else "none"


def unfreeze(config) -> str:
    return config.unfreeze or default_unfreeze(config.mode)


def batchnorm(config) -> str:
    """While backbone layers train; a stage that trains the head alone freezes the whole backbone."""
    return config.batchnorm or default_batchnorm(config.mode, unfreeze(config), config.recipe)


def default_batchnorm(mode: str, unfreeze_value: str, recipe: str | None) -> str:
    """The recipe's policy where it applies (recipes.py); otherwise frozen whenever any backbone layer is
    frozen, as Keras's transfer-learning guide advises."""
    return applied(mode, unfreeze_value, recipe)[0].batchnorm or ("train" if unfreeze_value == "all" else "frozen")


def canonical(mode: str, unfreeze_value: str | None, batchnorm_value: str | None,
              recipe: str | None = None) -> tuple[str | None, str | None]:
    """Settings equal to the mode's defaults stored as None, so the same run has one id however it was written."""
    u = None if unfreeze_value in (None, default_unfreeze(mode)) else unfreeze_value
    default_bn = default_batchnorm(mode, u or default_unfreeze(mode), recipe)
    return u, None if batchnorm_value in (None, default_bn) else batchnorm_value


def cut_layer(spec: Backbone, cut: str) -> str:
    return spec.cuts.get(cut, cut)


def block_starts(names: list[str], pattern: str) -> list[int]:
    """Index of the first layer of each block (see backbones.py for the two forms of `pattern`)."""
    rx = re.compile(pattern)
    if rx.groups:
        starts, last = [], None
        for i, name in enumerate(names):
            m = rx.match(name)
            if m and m.group(1) != last:
                starts.append(i)
                last = m.group(1)
        return starts
    ends = [i for i, name in enumerate(names) if rx.match(name)]
    return [1] + [i + 1 for i in ends[:-1]] if ends else []  # 1: after the input layer


def first_trained(names: list[str], spec: Backbone, value: str) -> int:
    """Index of the first layer that trains; len(names) when none does."""
    if value == "none":
        return len(names)
    if value == "all":
        return 0
    if value.startswith("last "):
        return block_starts(names, spec.blocks)[-int(value.split()[1])]
    return names.index(value.split(" ", 1)[1])


def problems(spec: Backbone, names: list[str], cut: str | None, unfreeze_value: str) -> list[tuple[str, str]]:
    """(setting, message) for a cut or an unfreeze depth that this backbone's layers do not have.

    `names` are the layers of the whole backbone; the depth is checked within the cut network."""
    out = []
    if cut is not None:
        layer = cut_layer(spec, cut)
        if layer not in names:
            presets = ", ".join(f"{k} ({v})" for k, v in spec.cuts.items())
            out.append(("cut", _no_layer(spec, layer, names) + f"; or a preset: {presets}"))
            return out
        names = names[: names.index(layer) + 1]
    if unfreeze_value.startswith("last "):
        n, have = int(unfreeze_value.split()[1]), len(block_starts(names, spec.blocks)) if spec.blocks else 0
        if n > have:
            out.append(("unfreeze", f"{spec.name}{' cut at ' + cut if cut else ''} has {have} blocks, "
                                    f"not {n}: use at most 'last {have} blocks' or 'all'"))
    elif unfreeze_value.startswith("from "):
        layer = unfreeze_value.split(" ", 1)[1]
        if layer not in names:
            out.append(("unfreeze", _no_layer(spec, layer, names) + (f" (before the cut at {cut})" if cut else "")))
    return out


def _no_layer(spec: Backbone, layer: str, names: list[str]) -> str:
    """A did-you-mean from the real layer names; all of them would be hundreds."""
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"{spec.name} has no layer '{layer}'{hint}; it has {len(names)} layers, from '{names[1]}' to '{names[-1]}'"


@lru_cache(maxsize=None)
def layer_names(backbone: str, input_size: int) -> tuple[str, ...]:
    """The backbone's layer names, from its architecture alone (no weights are read)."""
    import keras

    names = tuple(layer.name for layer in BACKBONES.get(backbone).build(input_size, weights=None).layers)
    keras.backend.clear_session()
    return names


def cut(model, spec: Backbone, cut_value: str | None):
    """The backbone truncated at the cut layer (the whole backbone when there is none)."""
    if cut_value is None:
        return model
    import keras

    return keras.Model(model.input, model.get_layer(cut_layer(spec, cut_value)).output, name=f"{model.name}_cut")


def set_trainable(model, spec: Backbone, config) -> None:
    """Freeze the layers before the unfreeze depth, and BatchNorm everywhere if its policy is frozen."""
    import keras

    start = first_trained([layer.name for layer in model.layers], spec, unfreeze(config))
    model.trainable = start < len(model.layers)
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= start
        if isinstance(layer, keras.layers.BatchNormalization) and batchnorm(config) == "frozen":
            layer.trainable = False
