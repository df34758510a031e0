"""A suite's `matrix:`: the axes it sweeps, its `include` entries, what `--set` replaces, and their combinations.

Each product (the matrix, each include entry) maps an axis to its values; a combination is one value per axis.
"""
from __future__ import annotations

import itertools
import json

from .backbones import BACKBONES
from .datasets import DATASETS
from .errors import unknown
from .modes import MODES
from .settings import SETTING_AXES, SETTINGS, axis_value, head

AXES = ("backend", "backbone", "dataset", "mode")
OPTIONAL_AXES = {"backend": ["tensorflow"]}
# Keras backends: the package each needs and how to install it. Runs of another backend than this process's
# run in a child process with KERAS_BACKEND set, since Keras fixes its backend at import.
BACKENDS = {"tensorflow": ("tensorflow", "pip install tensorflow"), "jax": ("jax", "pip install 'tlbench[jax]'"),
            "torch": ("torch", "pip install 'tlbench[torch]'")}


def json_text(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def valid_names(c, custom: dict, named: dict) -> dict[str, list[str]]:
    """What each named axis may hold; a dataset or mode declared with errors counts, its error said once."""
    return {"backend": list(BACKENDS), "backbone": BACKBONES.names(),
            "dataset": sorted(set(DATASETS.names()) | set(custom) | c.broken["dataset"]),
            "mode": MODES.names() + list(named) + sorted(c.broken["mode"])}


def swept(matrix: dict, includes: list[dict]) -> dict[str, list]:
    """Every value each axis takes anywhere in the matrix or its includes, in order of appearance."""
    out: dict[str, list] = {}
    for product in (matrix, *includes):
        for k, values in product.items():
            out.setdefault(k, [])
            out[k] += [v for v in values if v not in out[k]]
    return out


def parse(c, data, valid: dict, named: dict, settings: dict) -> tuple[dict[str, list], list[dict[str, list]]]:
    """The matrix's axes and its `include` entries (each an axis -> values mapping of its own)."""
    m = data.get("matrix")
    if m is None:
        c.error(("matrix",), "required: lists of backbone, dataset and mode")
        return {a: [] for a in AXES}, []
    m = c.mapping(m, ("matrix",), set(AXES) | set(SETTING_AXES) | {"include"})
    out = {}
    for axis in AXES:
        values = m.get(axis, OPTIONAL_AXES.get(axis))
        if values is None:
            c.error(("matrix", axis), f"required: one or more of {', '.join(valid[axis])}")
            out[axis] = []
            continue
        out[axis] = _names(c, ("matrix", axis), values, valid[axis])
    out.update(_product_settings(c, ("matrix",), m, named, settings))
    includes = []
    raw = m.get("include")
    if raw is not None and not isinstance(raw, list):
        c.error(("matrix", "include"), "expected a list of {AXIS: value or [values]} entries")
    for i, entry in enumerate(raw if isinstance(raw, list) else []):
        p = ("matrix", "include", i)
        entry = c.mapping(entry, p, set(AXES) | set(SETTING_AXES))
        if not entry and isinstance(entry, dict):
            c.error(p, "an include entry names at least one axis, e.g. {mode: unfrozen, recipe: modern}")
        extra = {axis: _names(c, p + (axis,), entry[axis], valid[axis]) for axis in AXES if axis in entry}
        extra.update(_product_settings(c, p, entry, named, settings))
        includes.append({**out, **extra})
    return out, includes


def _names(c, path: tuple, values, valid: list[str]) -> list[str]:
    """An axis's names (backend, backbone, dataset, mode), each checked against the valid ones."""
    listed = isinstance(values, list)
    values = values if listed else [values]
    if not values:
        c.error(path, "must not be empty")
    for i, v in enumerate(values):
        if v not in valid:
            c.error(path + (i,) if listed else path, unknown(path[-1], v, valid))
    names = [v for v in values if v in valid]
    if len(set(names)) != len(names):
        c.error(path, "lists a name twice")
    return names


def _product_settings(c, path: tuple, m: dict, named, settings) -> dict[str, list]:
    """The settings one product sweeps, in the file's order (the expansion's nesting)."""
    out = {}
    for key in (k for k in m if k in SETTING_AXES):
        out[key] = _setting_axis(c, path + (key,), m[key], settings)
        for name, (_, values, paths) in named.items():
            if key in values:
                c.error(paths[key], f"'{key}' is also a matrix axis: the mode would undo the sweep; "
                        "set it in the matrix or here, not both")
    return out


def _setting_axis(c, path: tuple, raw, settings: dict) -> list:
    """The values a matrix sweeps a setting over, each checked as in `defaults`."""
    key, listed = path[-1], isinstance(raw, list)
    values = []
    for i, v in enumerate(raw if listed else [raw]):
        try:
            v = axis_value(key, v, settings)
        except ValueError as e:
            c.refuse(key, path + (i,) if listed else path, str(e))
            continue
        if v in values:
            c.error(path, f"lists {v!r} twice")
        values.append(v)
    if not values and listed and not raw:
        c.error(path, "must not be empty")
    return values


def apply_cli(c, items, settings, origin, products, valid):
    """--set wins over the file: a setting for every run, or an axis replaced outright (in the matrix and
    in every include entry, so that the runs left are exactly the ones asked for)."""
    for key, value in items:
        if key in SETTING_AXES and any(key in p for p in products):  # replaces the file's sweeps
            names = value if isinstance(value, list) else [value]
            try:
                values = [axis_value(key, n, settings) for n in names]
            except ValueError as e:
                c.refuse(key, (key,), str(e), file="--set")
                continue
            for p in products:
                p[key] = values
        elif key in AXES:
            names = value if isinstance(value, list) else [value]
            for n in names:
                if n not in valid[key]:
                    c.error((key,), unknown(key, n, valid[key]), file="--set")
            for p in products:
                p[key] = [n for n in names if n in valid[key]]
        elif key.startswith("head."):
            try:
                settings["head"] = head({key[5:]: value}, settings["head"])
                origin["head"] = ("--set", "head")
            except ValueError as e:
                c.refuse("head", (key,), str(e), file="--set")
        elif key in SETTINGS:
            try:
                settings[key] = SETTINGS[key](value) if key != "head" else head(value, settings["head"])
                origin[key] = ("--set", key)
            except ValueError as e:
                c.refuse(key, (key,), str(e), file="--set")
        else:
            c.error((key,), unknown("key", key, list(SETTINGS) + list(AXES)), file="--set")
    c.cli = {k.split(".")[0] for k, _ in items}


def combinations(products: list[dict]) -> list[dict]:
    """Each product's combinations, in order; one the matrix already gave an include entry is not repeated."""
    out, seen = [], set()
    for product in products:
        for combo in itertools.product(*product.values()):
            at = dict(zip(product, combo))
            if json_text(at) not in seen:
                seen.add(json_text(at))
                out.append(at)
    return out
