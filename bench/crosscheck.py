"""Checks of one resolved run against what it names: the backbone's input size and layers, the recipe, the
data's size, and whether the backend, weights and data it needs are on this machine or can be downloaded.

Nothing here reads weights or images or touches the network: files are looked for, packages found by
importlib.util.find_spec. An error is reported where its setting was written (file and line, or --set).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from . import distribute, finetune, recipes
from .backbones import BACKBONES
from .datasets import DATASETS
from .errors import UserError
from .matrix import BACKENDS
from .modes import MODES
from .registry import UnknownName
from .weights import is_file_source, source as weights_source


def _where(o: dict, key: str) -> tuple[tuple, str | None]:
    """Where a setting was given: (path, None) in the file, or (key, '--set'); defaults when never given."""
    path = o.get(key, ("defaults", key))
    return (path[1:], "--set") if path[0] == "--set" else (path, None)


def _report(c, o: dict, key: str, message: str) -> None:
    """A problem with a setting's value, at the line that set it; none for a value refused already, whose
    runs hold the default in its place."""
    if key not in c.refused:
        path, file = _where(o, key)
        c.error(path, message, file=file)


def check_run(c, at: dict, mode: str, s: dict, o: dict, custom: dict) -> None:
    """`at`: the combination's axes; `mode`: its base mode; `s`: its settings; `o`: where each was set."""
    b = BACKBONES.get(at["backbone"])
    if s["input_size"] < b.min_size:
        _report(c, o, "input_size", f"{s['input_size']} is below {b.name}'s minimum input size {b.min_size}")
    else:
        _check_depth(c, b, mode, s, o)
    for key, message in recipes.problems(s, mode):
        _report(c, o, key, message)
    _check_weights(c, b, mode, s, o)
    _check_data(c, at["dataset"], s, o, custom)
    _check_backend(c, at["backend"])
    _check_devices(c, at["backend"], s, o)


def _check_devices(c, backend: str, s: dict, o: dict) -> None:
    """Data parallel needs a backend with a distribution and a batch that splits evenly; whether this machine has
    the devices is told at run time (that needs the backend imported)."""
    if s["devices"] is None:
        return
    if backend not in distribute.BACKENDS:
        _report(c, o, "devices", f"devices: {s['devices']} runs data parallel on backend "
                f"{' or '.join(distribute.BACKENDS)}, not {backend}; leave devices unset (one device) for {backend}")
    elif (n := distribute.count(s["devices"])) and s["batch_size"] % n:
        _report(c, o, "devices", f"devices: {n} splits each batch over {n} devices: batch_size {s['batch_size']} "
                f"is not a multiple of {n}")


def _check_depth(c, b, mode, s, o):
    """The cut, unfreeze depth and BatchNorm policy fit the mode and the backbone's real layers."""
    unfreeze = s["unfreeze"] or finetune.default_unfreeze(mode)
    if not MODES.get(mode).trainable and unfreeze != "none":
        _report(c, o, "unfreeze", f"mode '{mode}' keeps the whole backbone frozen; unfreeze: {unfreeze} needs mode "
                "unfrozen or scratch")
        return
    if s["batchnorm"] == "train" and unfreeze == "none":
        _report(c, o, "batchnorm", "batchnorm: train has no effect when no backbone layer trains (unfreeze: none)")
    needs_layers = (s["cut"] is not None and s["cut"] not in b.cuts) or unfreeze.startswith(("last ", "from "))
    if unfreeze.startswith("last ") and not b.blocks:
        _report(c, o, "unfreeze", f"{b.name} has no blocks defined for 'last N blocks'; use 'from LAYER'")
    elif needs_layers:  # builds the architecture (no weights), only when a name must be looked up
        names = list(finetune.layer_names(b.name, s["input_size"]))
        for key, message in finetune.problems(b, names, s["cut"], unfreeze):
            _report(c, o, key, message)


def _check_weights(c, b, mode, s, o):
    """A file named must exist; a source must fit the backbone and, for a pretrained mode, be on this machine
    (an error) or downloadable (a note: it needs internet)."""
    if "weights" in c.refused:
        return
    if is_file_source(s["weights"]) and not Path(s["weights"]).is_file():
        _report(c, o, "weights", f"weights file '{s['weights']}' does not exist")
        return
    src = weights_source(s["weights"])
    if src.backbones is not None and b.name not in src.backbones:
        _report(c, o, "weights", f"weights source '{src.name}' exists for {', '.join(src.backbones)} only, "
                f"not {b.name}")
    elif MODES.get(mode).pretrained:
        try:
            note = src.available(b, s["input_size"])
        except UserError as e:
            _report(c, o, "weights", str(e))
            return
        if note:
            c.note(note)


def _check_data(c, dataset: str, s: dict, o: dict, custom: dict) -> None:
    """The data is on this machine (or downloadable: a note) and holds the images the sizes ask for."""
    if dataset in custom:
        dtype, params, path = custom[dataset]["type"], custom[dataset], ("datasets", dataset)
    else:
        dtype, params, path = dataset, DATASETS.get(dataset).params, ("matrix", "dataset")
    try:
        kind = DATASETS.get(dtype)
        n_train, n_val = kind.counts(params)
        note = kind.available(params)
    except (UserError, UnknownName) as e:
        c.error(path, str(e))
        return
    if note:
        c.note(note)
    for key, n, split in (("train_size", n_train, "training"), ("val_size", n_val, "validation")):
        if s[key] is not None and s[key] > n:
            _report(c, o, key, f"{s[key]} is more than the {n} {split} images of dataset '{dataset}'")


def _check_backend(c, backend: str) -> None:
    package, install = BACKENDS[backend]
    if not _installed(package):
        path, file = ((("backend",), "--set") if "backend" in c.cli else (("matrix", "backend"), None))
        c.error(path, f"backend '{backend}' needs the Python package '{package}', which is not installed here: "
                f"{install}", file=file)


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # an import hook that refuses the name; a module without a spec
        return False
