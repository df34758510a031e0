"""A suite's settings: each one's check (returns the normalised value or raises ValueError) and its default.

The same checks read `defaults:`, a matrix sweep, an override's `set:` and `match:`, a mode's settings,
`--set`, and the parameters of a suite's named datasets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import distribute, finetune, recipes
from .errors import short, unknown
from .weights import WEIGHTS, is_file_source

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
POOLINGS = ("avg", "max", "flatten")
ACTIVATIONS = ("relu", "gelu", "swish", "tanh", "sigmoid", "linear")
# Integer dataset parameters whose least value is not 1: a classifier tells at least two classes apart.
LEAST_PARAM = {"seed": 0, "classes": 2}


def _int(lo: int | None = None, nullable: bool = False, hi: int = 10**9) -> Callable:
    def check(v):
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer{' or null' if nullable else ''}, got {short(v)}")
        if lo is not None and v < lo:
            raise ValueError(f"must be at least {lo}, got {short(v)}")
        if v > hi:  # a bound, so that a typo cannot ask for a billion runs or epochs and hang
            raise ValueError(f"must be at most {hi:,}, got {short(v)}")
        return v
    return check


def _positive_float(v):
    # PyYAML reads `1e-3` (no dot) as a string: accept it, since everyone writes it that way.
    try:
        f = float(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError):
        f = None
    if f is None or not f > 0:
        raise ValueError(f"expected a positive number, got {v!r}")
    return f


def _choice(valid: tuple[str, ...], kind: str) -> Callable:
    def check(v):
        if v not in valid:
            raise ValueError(unknown(kind, v, valid))
        return v
    return check


def _jit(v):
    mapping = {"auto": "auto", True: "on", False: "off", "on": "on", "off": "off"}
    if isinstance(v, (str, bool)) and v in mapping:
        return mapping[v]
    raise ValueError(f"expected auto, true or false, got {v!r}")


def _nullable(check: Callable) -> Callable:
    return lambda v: None if v is None else check(v)


def _cut(v):
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a layer name or early, middle or late, got {v!r}")
    return v


def _weights(v):
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a weights source name or a file path, got {v!r}")
    if v not in WEIGHTS and not is_file_source(v):
        raise ValueError(unknown("weights source", v, WEIGHTS.names()) + ", or a path to a *.weights.h5 file")
    return v


HEAD_KEYS = {
    "pooling": _choice(POOLINGS, "pooling"),
    "dense": None,  # checked in head
    "dropout": None,
    "activation": _choice(ACTIVATIONS, "activation"),
}


def head(v, base: dict | None = None):
    if not isinstance(v, dict):
        raise ValueError(f"expected a mapping with keys {', '.join(HEAD_KEYS)}, got {v!r}")
    out = dict(base or {})
    for k, val in v.items():
        if k not in HEAD_KEYS:
            raise ValueError(unknown("head key", k, HEAD_KEYS))
        if k == "dense":
            if not isinstance(val, list) or not all(isinstance(u, int) and not isinstance(u, bool) and u > 0
                                                   for u in val):
                raise ValueError(f"head.dense must be a list of positive integers (units per layer), got {val!r}")
        elif k == "dropout":
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val < 1:
                raise ValueError(f"head.dropout must be a number in [0, 1), got {val!r}")
            val = float(val)
        else:
            val = HEAD_KEYS[k](val)
        out[k] = val
    return out


SETTINGS: dict[str, Callable] = {
    "epochs": _int(1, hi=100_000),
    "batch_size": _int(1),
    "optimizer": _choice(OPTIMIZERS, "optimizer"),
    "learning_rate": _positive_float,
    "loss": _choice(LOSSES, "loss"),
    "input_size": _int(1, nullable=True),  # null: the backbone's default size
    "head": head,
    "train_size": _int(1, nullable=True),  # null: the whole training split
    "val_size": _int(1, nullable=True),
    "seed": _int(0),
    "repeats": _int(1, hi=1000),
    "precision": _choice(PRECISIONS, "precision"),
    "jit_compile": _jit,
    "steps_per_execution": _int(1),
    "weights": _weights,
    "cut": _nullable(_cut),  # null: the whole backbone
    "unfreeze": _nullable(finetune.parse_unfreeze),  # null: the mode's (none when frozen, all otherwise)
    "batchnorm": _nullable(_choice(finetune.BATCHNORM, "batchnorm policy")),  # null: frozen if any layer is
    "recipe": _nullable(recipes.parse),  # null: classic, the documents' recipe
    "devices": _nullable(distribute.parse),  # null: one device
}
# Settings a matrix may sweep: all but the repeat count, which is not a configuration.
SETTING_AXES = tuple(k for k in SETTINGS if k != "repeats")

DEFAULTS: dict[str, Any] = {
    "epochs": 5, "batch_size": 32, "optimizer": "adam", "learning_rate": 1e-3,
    "loss": "categorical_crossentropy", "input_size": None,
    # The documents' head: global average pooling -> Dense 512 relu -> Dense n softmax.
    "head": {"pooling": "avg", "dense": [512], "dropout": 0.0, "activation": "relu"},
    "train_size": None, "val_size": None, "seed": 0, "repeats": 1, "precision": "float32",
    "jit_compile": "auto", "steps_per_execution": 1, "weights": "imagenet",
    "cut": None, "unfreeze": None, "batchnorm": None, "recipe": None, "devices": None,
}


def axis_value(key: str, v, settings: dict):
    """A setting's value in a matrix, an override's match or --set, normalised as in `defaults`."""
    return head(v, settings["head"]) if key == "head" else SETTINGS[key](v)


def check_settings(c, values: dict, path: tuple, base: dict) -> dict:
    """Validate a settings mapping; returns the normalised valid entries (head merged onto base's)."""
    out = {}
    for k, v in c.mapping(values, path, SETTINGS).items():
        if k not in SETTINGS:
            continue
        try:
            out[k] = head(v, base.get("head")) if k == "head" else SETTINGS[k](v)
        except ValueError as e:
            c.refuse(k, path + (k,), str(e))
    return out


def dataset_param(key: str, value, default, base_dir: Path):
    """A dataset parameter, checked against the type of its default (paths: relative to the suite)."""
    if key == "path":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a folder path, got {value!r}")
        return str((base_dir / value).resolve())
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    if isinstance(default, int):
        return _int(LEAST_PARAM.get(key, 1))(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"expected a non-negative number, got {value!r}")
    if key.endswith("fraction") and not 0 < value < 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return float(value)
