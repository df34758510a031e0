"""The shape of a run record: what runner.run_one writes and what every reader of a record relies on.

Readers index records directly (record["config"]["mode"], epoch["phase"]), so each record is checked
against this schema as it is read: one that fails is left out by name, with what is wrong, instead of
crashing a command halfway through. Only the fields readers use are checked, types included; the rest
(data, weights, execution, ...) is provenance, shown as it is.

VERSION is a record's `schema` field. Fields added in a later version are optional here, because
records of an earlier one lack them and the readers default them; the configuration's fields are
RunConfig's own, so a record that reads here also rebuilds its RunConfig.
"""
from __future__ import annotations

import typing
from dataclasses import MISSING, fields

from .config import RunConfig
from .errors import short
from .suite import SAFE_NAME

# 2: key_parts, load, schedule, cpu_info; 3: batchnorm_check, input_pipeline, gpu, epochs' load and gpu; 4: devices
VERSION = 4

NONE = type(None)
NUMBER = (int, float)
PHASES = ("first", "steady")
MOST_SHOWN = 3  # problems named per record; a record of the wrong shape altogether has dozens

# (field, allowed types, required)
Spec = list[tuple[str, tuple[type, ...], bool]]

RECORD: Spec = [("run_id", (str,), True), ("status", (str,), True), ("config", (dict,), True),
                ("environment", (dict,), True), ("epochs", (list,), True), ("schema", (int,), False),
                ("suite", (str, NONE), False), ("error", (str, NONE), False), ("started", (str, NONE), False),
                ("finished", (str, NONE), False), ("key", (str, NONE), False), ("key_parts", (dict, NONE), False),
                ("build_seconds", (*NUMBER, NONE), False), ("params", (dict, NONE), False),
                ("memory", (dict, NONE), False), ("load", (dict, NONE), False), ("features", (dict, NONE), False),
                ("flops", (dict, NONE), False), ("data", (dict, NONE), False), ("batchnorm_check", (dict, NONE), False),
                ("input_pipeline", (dict, NONE), False), ("gpu", (dict, NONE), False), ("devices", (dict, NONE), False),
                # where a run ran when not in the `run` process itself: {name: ray, node, attempts, first_failure}
                ("executor", (dict, NONE), False)]
ENVIRONMENT: Spec = [("device", (str,), True), ("accelerator_count", (int, NONE), False),
                     ("cpu_count", (int, NONE), False), ("cpu_info", (dict, NONE), False),
                     ("keras_backend", (str, NONE), False), ("versions", (dict, NONE), False),
                     ("git", (dict, NONE), False), ("platform", (str, NONE), False)]
NESTED: dict[str, Spec] = {
    "environment.cpu_info": [("cores", (int, NONE), False)],
    "environment.git": [("commit", (str, NONE), False), ("dirty", (bool, NONE), False)],
    "params": [("trainable", (int, NONE), False), ("non_trainable", (int, NONE), False)],
    "flops": [("forward", (int, NONE), False), ("train", (int, NONE), False)],
    "memory": [("host_peak_rss_bytes", (*NUMBER, NONE), False), ("accelerator_peak_bytes", (*NUMBER, NONE), False)],
    # load.interference adds steal to others' share: a null steal would not add
    "load": [("others_fraction", (*NUMBER, NONE), False), ("steal_fraction", NUMBER, False),
             ("loadavg_start", (list, NONE), False), ("loadavg_end", (list, NONE), False),
             ("busy_processes", (list, NONE), False)],
    "features": [("extract_seconds", (*NUMBER, NONE), False)],
    "data": [("classes", (int, NONE), False), ("train_images", (int, NONE), False), ("val_images", (int, NONE), False)],
    "batchnorm_check": [("images", (int,), True), ("moving_accuracy", NUMBER, True), ("batch_accuracy", NUMBER, True)],
    "input_pipeline": [("seconds_per_epoch", NUMBER, True)],
    "gpu": [("start", (list,), False), ("end", (list,), False), ("throttled_seconds", (list,), False)],
    "devices": [("count", (int,), True), ("list", (list,), False), ("strategy", (str,), False)],
}
EPOCH: Spec = [("epoch", (int,), True), ("phase", (str,), True), ("epoch_seconds", NUMBER, True),
               ("train_seconds", NUMBER, True), ("train_images", (int,), True),
               ("val_accuracy", (*NUMBER, NONE), True), ("loss", (*NUMBER, NONE), False),
               ("accuracy", (*NUMBER, NONE), False), ("val_loss", (*NUMBER, NONE), False),
               ("val_seconds", NUMBER, False), ("images_per_second", (*NUMBER, NONE), False),
               ("stage", (int,), False), ("load", (dict, NONE), False), ("gpu", (list, NONE), False)]
EPOCH_LOAD: Spec = [("loadavg_1min", (*NUMBER, NONE), False), ("others_fraction", NUMBER, False),
                    ("steal_fraction", NUMBER, False)]

# What a measurement can be at all; beyond it a value is damage, and a figure's axis would be sized by it.
# NaN passes: the readers leave non-finite samples out.
BOUNDS = {"accuracy": (0, 1), "val_accuracy": (0, 1), "epoch_seconds": (0, None), "train_seconds": (0, None),
          "val_seconds": (0, None), "train_images": (0, None)}


def _config_spec() -> Spec:
    hints = typing.get_type_hints(RunConfig)
    spec = []
    for f in fields(RunConfig):
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        if float in allowed:  # YAML writes a whole learning rate (1) as an integer
            allowed += (int,)
        spec.append((f.name, allowed, f.default is MISSING and f.default_factory is MISSING))
    return spec


CONFIG = _config_spec()
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
          list: "a list", NONE: "null"}


def _fits(value, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true is no epoch count, though Python's bool is an int
        return bool in types
    if isinstance(value, int) and abs(value) > 2**53:  # readers compute in floats; this one has no float
        return False
    return isinstance(value, types)


def _expected(types: tuple[type, ...]) -> str:
    shown = [t for t in types if not (t is int and float in types)]
    return " or ".join(_NAMES[t] for t in shown)


def kind(value) -> str:
    """'a string 'abc'', 'null', 'a list': what a value is, as a message says it."""
    name = _NAMES.get(type(value), type(value).__name__)
    return name if isinstance(value, (dict, list, NONE)) else f"{name} {short(value, 40)}"


def _check(where: str, mapping: dict, spec: Spec, out: list[str]) -> None:
    for name, types, required in spec:
        if name not in mapping:
            if required:
                out.append(f"{where}{name} missing")
        elif not _fits(mapping[name], types):
            out.append(f"{where}{name} is {kind(mapping[name])}, expected {_expected(types)}")


def _at(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _folder_name(name) -> bool:
    """A suite name becomes a folder (RESULTS/<suite>, baselines/<machine>/<suite>): the rule suite.load keeps."""
    return not isinstance(name, str) or (SAFE_NAME.fullmatch(name) is not None and ".." not in name
                                         and len(name) <= 100)


def problems(record) -> list[str]:
    """What in a record breaks the schema, each located ('epochs[2].phase missing'); [] for a good record."""
    if not isinstance(record, dict):
        return [f"the file holds {kind(record)}, not a run record (a JSON mapping)"]
    out: list[str] = []
    _check("", record, RECORD, out)
    if isinstance(record.get("config"), dict):
        _check("config.", record["config"], CONFIG, out)
    if isinstance(record.get("environment"), dict):
        _check("environment.", record["environment"], ENVIRONMENT, out)
    for where, spec in NESTED.items():
        if isinstance(value := _at(record, where), dict):
            _check(f"{where}.", value, spec, out)
    for where in ("suite", "config.suite"):
        if not _folder_name(_at(record, where)):
            out.append(f"{where} is {kind(_at(record, where))}, not a suite name (letters, digits, '-', '_', '.')")
    planned = _at(record, "config.epochs")
    for i, epoch in enumerate(record.get("epochs") if isinstance(record.get("epochs"), list) else []):
        where = f"epochs[{i}]"
        if not isinstance(epoch, dict):
            out.append(f"{where} is {kind(epoch)}, expected a mapping")
            continue
        _check(f"{where}.", epoch, EPOCH, out)
        if isinstance(epoch.get("load"), dict):
            _check(f"{where}.load.", epoch["load"], EPOCH_LOAD, out)
        for name, (low, high) in BOUNDS.items():
            value = epoch.get(name)
            if _fits(value, NUMBER) and (value < low or (high is not None and value > high)):
                out.append(f"{where}.{name} is {value}, outside {low}-{high if high is not None else '∞'}")
        if isinstance(epoch.get("phase"), str) and epoch["phase"] not in PHASES:
            out.append(f"{where}.phase is {short(epoch['phase'], 40)}, expected one of {', '.join(PHASES)}")
        number = epoch.get("epoch")
        if _fits(number, (int,)) and _fits(planned, (int,)) and not 1 <= number <= planned:
            out.append(f"{where}.epoch is {number}, outside the run's epochs 1-{planned}")
    return out


def summary(found: list[str]) -> str:
    """The first few problems of a record, and how many more."""
    more = f"; and {len(found) - MOST_SHOWN} more" if len(found) > MOST_SHOWN else ""
    return "; ".join(found[:MOST_SHOWN]) + more
