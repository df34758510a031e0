"""Suite files: read the YAML, validate every key with its line number, expand into RunConfigs.

Schema (README "Suite files" documents it for users):

  name: str                      required; also the results folder name
  description: str
  defaults: {SETTING: value}     see SETTINGS below
  matrix: {backbone: [...], dataset: [...], mode: [...], SETTING: [...]}   each a value or a list of values;
                                 any setting but `repeats` can be an axis (train_size: [250, 1000, 4000])
          include: [{AXIS: value or [values]}]   more runs beside the product: each entry is a product of
                                 its own, axes it does not name taken from the matrix (an ablation of one mode)
  overrides: [{match: {AXIS: value or [values]}, set: {SETTING: value}}]   later entries win
  datasets: {NAME: {type: DATASET_TYPE, PARAM: value}}     named variants (image folders, synthetic sizes)
  modes: {NAME: {type: MODE, SETTING: value}}   named variants of a mode (a strategy: cut-early,
                                 top-blocks), usable in matrix.mode; runs record the NAME as `strategy`
  regression: {time: 0.10, throughput: 0.10, accuracy: 2.0,
               overrides: [{match: {AXIS: name or [names]}, METRIC: value}]}   thresholds for `tlbench compare`
  reference: NAME                a documents' table to set beside the results in `tlbench report`
                                 (bench/references/NAME.yaml)
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import finetune, recipes
from .backbones import BACKBONES
from .config import RunConfig
from .datasets import DATASETS
from .errors import ConfigError, SuiteErrors, UserError, short, unknown
from .modes import MODES
from .registry import UnknownName
from .weights import WEIGHTS, is_file_source, source as weights_source

AXES = ("backend", "backbone", "dataset", "mode")
# What a name that becomes a folder or goes into a run id (and so a file name) may hold.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Keras backends and the package each needs; runs of another backend than this process's run in a
# child process with KERAS_BACKEND set, since Keras fixes its backend at import.
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
OPTIONAL_AXES = {"backend": ["tensorflow"]}
TOP_KEYS = {"name", "description", "defaults", "matrix", "overrides", "datasets", "modes", "regression", "reference"}
# The documents' tables, kept as data; a suite names one with `reference:`.
REFERENCES = Path(__file__).resolve().parent / "references"
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
POOLINGS = ("avg", "max", "flatten")
ACTIVATIONS = ("relu", "gelu", "swish", "tanh", "sigmoid", "linear")


# --- value checks: return the normalised value or raise ValueError(message) ----------------

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
    "dense": None,  # checked in _head
    "dropout": None,
    "activation": _choice(ACTIVATIONS, "activation"),
}


def _head(v, base: dict | None = None):
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
    "head": _head,
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
    "cut": None, "unfreeze": None, "batchnorm": None, "recipe": None,
}


# --- YAML with line numbers ----------------------------------------------------------------

def _bounded(root) -> None:
    """Refuse a YAML document that expands to more than MAX_NODES nodes or nests deeper than MAX_DEPTH,
    before anything walks it recursively or builds it."""
    if root is None:
        return
    seen, stack = 0, [(root, ())]
    while stack:
        node, above = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)")
        if id(node) in above:
            raise ValueError("an alias that contains itself")
        if len(above) > MAX_DEPTH:
            raise RecursionError
        above += (id(node),)
        if isinstance(node, yaml.MappingNode):
            stack += [(n, above) for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(n, above) for n in node.value]


def _lines(node: yaml.Node, path: tuple, out: dict, dups: list) -> None:
    out.setdefault(path, node.start_mark.line + 1)  # a mapping key's own line beats its value's
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                dups.append((path + (key,), k.start_mark.line + 1))
            seen.add(key)
            out[path + (key,)] = k.start_mark.line + 1
            _lines(v, path + (key,), out, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, path + (i,), out, dups)


def _dotted(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


@dataclass
class Suite:
    name: str
    description: str
    file: str
    runs: list[RunConfig]
    # Thresholds `tlbench compare` applies to this suite's results (see _regression); only what was given.
    regression: dict = field(default_factory=dict)
    reference: str | None = None  # name of a table in REFERENCES
    axes: list[str] = field(default_factory=list)  # settings the matrix sweeps (shown beside each run's name)

    def describe(self, run: RunConfig) -> str:
        """The run's name with the values of the swept settings: 'mobilenet_v2 · mnist · frozen · train_size=250'."""
        return " · ".join([run.label] + [f"{k}={recipes.name(run.recipe) if k == 'recipe' else getattr(run, k)}"
                                         for k in self.axes])


class _Checker:
    """Collects located errors while a suite is read."""

    def __init__(self, file: str, lines: dict):
        self.file, self.lines, self.errors = file, lines, []
        self.cli: set[str] = set()  # settings given by --set, which later file overrides must not undo

    def error(self, path: tuple, message: str, file: str | None = None) -> None:
        line = None
        if file is None:  # a missing key has no line: point at the nearest enclosing one
            p = path
            while line is None and p:
                line, p = self.lines.get(p), p[:-1]
        err = ConfigError(file or self.file, _dotted(path), message, line)
        if str(err) not in {str(e) for e in self.errors}:
            self.errors.append(err)

    def mapping(self, value, path: tuple, valid: set | dict | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {type(value).__name__} {value!r}")
            return {}
        if valid is not None:
            for k in list(value):
                if k not in valid:
                    self.error(path + (k,), unknown("key", k, valid))
        return value


def parse_set(items: list[str]) -> list[tuple[str, Any]]:
    """--set KEY=VALUE items (VALUE read as YAML) -> [(key, value)]."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "expected KEY=VALUE, e.g. --set epochs=2")
        try:
            out.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError as e:
            raise ConfigError("--set", key, f"cannot read value {raw!r}: {e}") from None
    return out


# A suite is a page of text with hundreds of YAML nodes; these bound what a hostile or broken file can cost.
MAX_SUITE_BYTES = 1 << 20
MAX_NODES = 100_000  # counted after aliases are expanded: an alias bomb or a recursive alias exceeds it
MAX_DEPTH = 40
MAX_RUNS = 100_000


def read(path: Path) -> tuple[dict, _Checker]:
    """The YAML as data plus a checker that knows every key's line; raises SuiteErrors if unreadable."""
    file = str(path)

    def fail(message: str, line: int | None = None):
        raise SuiteErrors([ConfigError(file, "", message, line)])

    try:
        raw = path.read_bytes()
    except OSError as e:
        fail(f"cannot read suite file: {e.strerror or e}")
    if len(raw) > MAX_SUITE_BYTES:
        fail(f"{len(raw):,} bytes: a suite file is YAML text of at most {MAX_SUITE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        utf16 = " (it looks like UTF-16: save it as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        fail(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}{utf16}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _bounded(node)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        at = ""
        if mark is not None and mark.line < len(text.splitlines()):  # the line names the key, however long
            at = f" (line {mark.line + 1}: {short(text.splitlines()[mark.line].strip())})"
        fail(f"not valid YAML: {problem}{at}", mark.line + 1 if mark else None)
    except RecursionError:
        fail(f"nested more than {MAX_DEPTH} levels deep")
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        fail(f"not valid YAML: {str(e)[:200]}")
    lines, dups = {}, []
    if node is not None:
        _lines(node, (), lines, dups)
    c = _Checker(file, lines)
    for p, line in dups:
        c.errors.append(ConfigError(file, _dotted(p), "key appears twice (the first would be ignored)", line))
    if not isinstance(data, dict):
        c.error((), "a suite file must be a mapping with at least 'name' and 'matrix'")
        raise SuiteErrors(c.errors)
    return data, c


def load(path: str | Path, overrides: list[tuple[str, Any]] = ()) -> Suite:
    """Read, validate and expand a suite; raise SuiteErrors listing every problem found."""
    path = Path(path)
    data, c = read(path)
    c.mapping(data, (), TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > 100:
        c.error(("name",), "required: the results folder's name, 1 to 100 letters, digits, '-', '_' or '.' "
                f"(starting with a letter or digit, no '..'), got {short(name)}")
    description = data.get("description") or ""

    settings, origin = _settings(c, data)
    custom = _datasets(c, data, path.parent)
    named = _modes(c, data)
    matrix, includes = _matrix(c, data, custom, named, settings)
    rules = _overrides(c, data, _swept(matrix, includes), settings)
    regression = _regression(c, data, _swept(matrix, includes))
    reference = data.get("reference")
    if reference is not None and reference not in reference_names():
        c.error(("reference",), unknown("reference", reference, reference_names()))
    _apply_cli(c, overrides, settings, origin, [matrix, *includes], _valid_names(custom, named))

    runs = []
    if not c.errors:
        runs = _expand(c, name, settings, origin, matrix, includes, rules, custom, named)
    if c.errors:
        raise SuiteErrors(c.errors)
    axes = [k for k in _swept(matrix, includes)
            if k in SETTINGS and len({json_text(getattr(r, k)) for r in runs}) > 1]
    return Suite(name, description, str(path), runs, regression, reference, axes)


def json_text(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _swept(matrix: dict, includes: list[dict]) -> dict[str, list]:
    """Every value each axis takes anywhere in the matrix or its includes, in order of appearance."""
    out: dict[str, list] = {}
    for product in (matrix, *includes):
        for k, values in product.items():
            out.setdefault(k, [])
            out[k] += [v for v in values if v not in out[k]]
    return out


def reference_names() -> list[str]:
    return sorted(p.stem for p in REFERENCES.glob("*.yaml"))


def _check_settings(c: _Checker, values: dict, path: tuple, base: dict) -> dict:
    """Validate a settings mapping; returns the normalised valid entries (head merged onto base's)."""
    out = {}
    for k, v in c.mapping(values, path, SETTINGS).items():
        if k not in SETTINGS:
            continue
        try:
            out[k] = _head(v, base.get("head")) if k == "head" else SETTINGS[k](v)
        except ValueError as e:
            c.error(path + (k,), str(e))
    return out


def _settings(c, data):
    settings = copy.deepcopy(DEFAULTS)
    given = _check_settings(c, data.get("defaults"), ("defaults",), settings)
    settings.update(given)
    origin = {k: ("defaults", k) for k in given}
    return settings, origin


def _datasets(c, data, base_dir: Path) -> dict[str, dict]:
    custom = {}
    for name, spec in c.mapping(data.get("datasets"), ("datasets",)).items():
        p = ("datasets", name)
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or len(name) > 60:
            c.error(p, f"a dataset name goes into run ids and file names: up to 60 letters, digits, '-', '_', '.'; "
                    f"got {short(name)}")
            continue
        spec = c.mapping(spec, p)
        dtype = spec.get("type", name)
        if dtype not in DATASETS:
            c.error(p + ("type",), unknown("dataset type", dtype, DATASETS.names()))
            continue
        known = DATASETS.get(dtype).params
        params = dict(known)
        for k, v in spec.items():
            if k == "type":
                continue
            if k not in known:
                c.error(p + (k,), unknown(f"{dtype} parameter", k, known))
                continue
            try:
                params[k] = _dataset_param(k, v, known[k], base_dir)
            except ValueError as e:
                c.error(p + (k,), str(e))
        for k, v in params.items():
            if v is None:
                c.error(p, f"{dtype} needs '{k}'")
        custom[name] = {"type": dtype, **params}
    return custom


def _dataset_param(key: str, value, default, base_dir: Path):
    """A dataset parameter, checked against the type of its default (paths: relative to the suite)."""
    if key == "path":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a folder path, got {value!r}")
        return str((base_dir / value).resolve())
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    if isinstance(default, int):
        return _int(1 if key != "seed" else 0)(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"expected a non-negative number, got {value!r}")
    if key.endswith("fraction") and not 0 < value < 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return float(value)


def _modes(c, data) -> dict[str, tuple[str, dict, dict]]:
    """The suite's named mode variants: name -> (base mode, settings, where each setting was written)."""
    named = {}
    for name, spec in c.mapping(data.get("modes"), ("modes",)).items():
        p = ("modes", name)
        if name in MODES:
            c.error(p, f"'{name}' is a built-in mode; give the variant a name of its own (e.g. '{name}-top-blocks')")
            continue
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or len(name) > 60:
            c.error(p, f"a mode name goes into run ids and file names: up to 60 letters, digits, '-', '_', '.'; "
                    f"got {short(name)}")
            continue
        spec = c.mapping(spec, p, {"type", *SETTINGS})
        base = spec.get("type")
        if base not in MODES:
            c.error(p + ("type",) if "type" in spec else p,
                    unknown("mode", base, MODES.names()) if "type" in spec else
                    f"needs 'type': the mode it varies, one of {', '.join(MODES.names())}")
            continue
        values = _check_settings(c, {k: v for k, v in spec.items() if k in SETTINGS}, p, DEFAULTS)
        named[name] = (base, values, {k: p + (k,) for k in values})
    return named


def _valid_names(custom, named) -> dict[str, list[str]]:
    return {"backend": list(BACKENDS), "backbone": BACKBONES.names(),
            "dataset": sorted(set(DATASETS.names()) | set(custom)), "mode": MODES.names() + list(named)}


def _axis_value(key: str, v, settings: dict):
    """A setting's value in a matrix, an override's match or --set, normalised as in `defaults`."""
    return _head(v, settings["head"]) if key == "head" else SETTINGS[key](v)


def _matrix(c, data, custom, named, settings) -> tuple[dict[str, list], list[dict[str, list]]]:
    """The matrix's axes and its `include` entries (each an axis -> values mapping of its own)."""
    m = data.get("matrix")
    if m is None:
        c.error(("matrix",), "required: lists of backbone, dataset and mode")
        return {a: [] for a in AXES}, []
    m = c.mapping(m, ("matrix",), set(AXES) | set(SETTING_AXES) | {"include"})
    valid = _valid_names(custom, named)
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
    for backend in _swept(out, includes).get("backend", []):
        if importlib.util.find_spec(BACKENDS[backend]) is None:
            c.error(("matrix", "backend"), f"backend '{backend}' needs the Python package '{BACKENDS[backend]}', "
                    f"which is not installed here: pip install 'tlbench[{backend}]'")
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
            v = _axis_value(key, v, settings)
        except ValueError as e:
            c.error(path + (i,) if listed else path, str(e))
            continue
        if v in values:
            c.error(path, f"lists {v!r} twice")
        values.append(v)
    if not values and listed and not raw:
        c.error(path, "must not be empty")
    return values


def _overrides(c, data, matrix, settings):
    rules = []
    raw = data.get("overrides")
    if raw is None:
        return rules
    if not isinstance(raw, list):
        c.error(("overrides",), "expected a list of {match: ..., set: ...}")
        return rules
    for i, rule in enumerate(raw):
        p = ("overrides", i)
        rule = c.mapping(rule, p, {"match", "set"})
        match = {}
        for axis, v in c.mapping(rule.get("match"), p + ("match",), set(matrix)).items():
            if axis not in matrix:
                continue
            names = v if isinstance(v, list) else [v]
            if axis in SETTINGS:
                try:
                    names = [_axis_value(axis, n, settings) for n in names]
                except ValueError as e:
                    c.error(p + ("match", axis), str(e))
                    continue
            for n in names:
                if n not in matrix[axis]:
                    c.error(p + ("match", axis), f"'{n}' is not in matrix.{axis} "
                            f"({', '.join(map(str, matrix[axis])) or 'empty'}): this override would never apply")
            match[axis] = [n for n in names if n in matrix[axis]]
        if "set" not in rule:
            c.error(p, "needs 'set': the settings to change")
        values = _check_settings(c, rule.get("set"), p + ("set",), DEFAULTS)
        rules.append((match, values, {k: p + ("set", k) for k in values}))
    return rules


def _apply_cli(c, items, settings, origin, products, valid):
    """--set wins over the file: a setting for every run, or an axis replaced outright (in the matrix and
    in every include entry, so that the runs left are exactly the ones asked for)."""
    for key, value in items:
        if key in SETTING_AXES and any(key in p for p in products):  # replaces the file's sweeps
            names = value if isinstance(value, list) else [value]
            try:
                swept = [_axis_value(key, n, settings) for n in names]
            except ValueError as e:
                c.error((key,), str(e), file="--set")
                continue
            for p in products:
                p[key] = swept
        elif key in AXES:
            names = value if isinstance(value, list) else [value]
            for n in names:
                if n not in valid[key]:
                    c.error((key,), unknown(key, n, valid[key]), file="--set")
            for p in products:
                p[key] = [n for n in names if n in valid[key]]
        elif key.startswith("head."):
            try:
                settings["head"] = _head({key[5:]: value}, settings["head"])
                origin["head"] = ("--set", "head")
            except ValueError as e:
                c.error((key,), str(e), file="--set")
        elif key in SETTINGS:
            try:
                settings[key] = SETTINGS[key](value) if key != "head" else _head(value, settings["head"])
                origin[key] = ("--set", key)
            except ValueError as e:
                c.error((key,), str(e), file="--set")
        else:
            c.error((key,), unknown("key", key, list(SETTINGS) + list(AXES)), file="--set")
    c.cli = {k.split(".")[0] for k, _ in items}


def _combinations(products: list[dict]) -> list[dict]:
    """Each product's combinations, in order; one the matrix already gave an include entry is not repeated."""
    out, seen = [], set()
    for product in products:
        for combo in itertools.product(*product.values()):
            at = dict(zip(product, combo))
            if json_text(at) not in seen:
                seen.add(json_text(at))
                out.append(at)
    return out


def _expand(c, name, settings, origin, matrix, includes, rules, custom, named) -> list[RunConfig]:
    """Every run, repeat by repeat: round-robin over the configurations, so that a drift of the machine's
    speed during a suite spreads over all modes instead of falling on the one whose repeats ran last."""
    by_repeat: dict[int, list[RunConfig]] = {}
    swept = _swept(matrix, includes)
    combos = sum(math.prod(len(v) for v in p.values()) for p in (matrix, *includes))
    if combos * max(settings["repeats"], 1) > MAX_RUNS:
        c.error(("matrix",), f"expands to {combos:,} combinations × {settings['repeats']} repeats: more than "
                f"{MAX_RUNS:,} runs; split the suite")
        return []
    seen: dict[str, str] = {}
    for at in _combinations([matrix, *includes]):
        s, o = copy.deepcopy(settings), dict(origin)
        for k in (a for a in at if a in SETTINGS):
            s[k], o[k] = at[k], ("matrix", k)
        mode, values, paths = named.get(at["mode"], (at["mode"], {}, {}))
        layers = [(values, paths)] + [(v, p) for match, v, p in rules
                                      if all(s.get(a, at.get(a)) in names for a, names in match.items())]
        for values, paths in layers:
            for k, v in values.items():
                if k in c.cli:  # --set beats the file's modes and overrides
                    continue
                s[k] = _head(v, s["head"]) if k == "head" else v
                o[k] = paths[k]
        backbone, dataset = at["backbone"], at["dataset"]
        input_size = s["input_size"] or BACKBONES.get(backbone).default_size
        _check_run(c, backbone, dataset, mode, {**s, "input_size": input_size}, o, custom)
        unfreeze, batchnorm = finetune.canonical(mode, s["unfreeze"], s["batchnorm"], s["recipe"])
        params = custom[dataset] if dataset in custom else {"type": dataset, **DATASETS.get(dataset).params}
        for r in range(s["repeats"]):
            run = RunConfig(
                suite=name, backend=at["backend"], backbone=backbone, dataset=dataset, mode=mode, repeat=r,
                epochs=s["epochs"], batch_size=s["batch_size"], optimizer=s["optimizer"],
                learning_rate=s["learning_rate"], loss=s["loss"], input_size=input_size, head=s["head"],
                train_size=s["train_size"], val_size=s["val_size"], seed=s["seed"], precision=s["precision"],
                jit_compile=s["jit_compile"], steps_per_execution=s["steps_per_execution"],
                weights=s["weights"], dataset_params=params, strategy=at["mode"] if at["mode"] in named else None,
                cut=s["cut"], unfreeze=unfreeze, batchnorm=batchnorm, recipe=s["recipe"])
            # the same settings under two names would measure one thing twice and table it as two
            same = dataclasses.replace(run, strategy=None).digest
            where = ", ".join(f"{a}={at[a]}" for a in at if len(swept[a]) > 1)
            if same in seen:
                c.error(("matrix",), f"two matrix entries give the same run ({seen[same]}; {where}): "
                        "a mode or override sets them to identical settings")
            seen.setdefault(same, where)
            by_repeat.setdefault(r, []).append(run)
    return [run for r in sorted(by_repeat) for run in by_repeat[r]]


def _where(o, key):
    """Report a cross-checked value where it was set (file and line), or at defaults."""
    path = o.get(key, ("defaults", key))
    return (path[1:], "--set") if path[0] == "--set" else (path, None)


def _check_run(c, backbone, dataset, mode, s, o, custom):
    b = BACKBONES.get(backbone)
    if s["input_size"] < b.min_size:
        p, f = _where(o, "input_size")
        c.error(p, f"{s['input_size']} is below {backbone}'s minimum input size {b.min_size}", file=f)
    else:
        _check_depth(c, b, mode, s, o)
    for key, message in recipes.problems(s, mode):
        p, f = _where(o, key)
        c.error(p, message, file=f)
    if is_file_source(s["weights"]) and not Path(s["weights"]).is_file():
        p, f = _where(o, "weights")
        c.error(p, f"weights file '{s['weights']}' does not exist", file=f)
    src = weights_source(s["weights"])
    if src.backbones is not None and backbone not in src.backbones:
        p, f = _where(o, "weights")
        c.error(p, f"weights source '{src.name}' exists for {', '.join(src.backbones)} only, not {backbone}", file=f)
    if dataset in custom:
        dtype, params, dpath = custom[dataset]["type"], custom[dataset], ("datasets", dataset)
    else:
        dtype, params, dpath = dataset, DATASETS.get(dataset).params, ("matrix", "dataset")
    try:
        n_train, n_val = DATASETS.get(dtype).counts(params)
    except (UserError, UnknownName) as e:
        c.error(dpath, str(e))
        return
    for key, n, split in (("train_size", n_train, "training"), ("val_size", n_val, "validation")):
        if s[key] is not None and s[key] > n:
            p, f = _where(o, key)
            c.error(p, f"{s[key]} is more than the {n} {split} images of dataset '{dataset}'", file=f)


def _check_depth(c, b, mode, s, o):
    """The cut, unfreeze depth and BatchNorm policy fit the mode and the backbone's real layers."""
    unfreeze = s["unfreeze"] or finetune.default_unfreeze(mode)
    if not MODES.get(mode).trainable and unfreeze != "none":
        p, f = _where(o, "unfreeze")
        c.error(p, f"mode '{mode}' keeps the whole backbone frozen; unfreeze: {unfreeze} needs mode unfrozen "
                "or scratch", file=f)
        return
    if s["batchnorm"] == "train" and unfreeze == "none":
        p, f = _where(o, "batchnorm")
        c.error(p, "batchnorm: train has no effect when no backbone layer trains (unfreeze: none)", file=f)
    needs_layers = (s["cut"] is not None and s["cut"] not in b.cuts) or unfreeze.startswith(("last ", "from "))
    if unfreeze.startswith("last ") and not b.blocks:
        p, f = _where(o, "unfreeze")
        c.error(p, f"{b.name} has no blocks defined for 'last N blocks'; use 'from LAYER'", file=f)
    elif needs_layers:  # builds the architecture (no weights), only when a name must be looked up
        names = list(finetune.layer_names(b.name, s["input_size"]))
        for key, message in finetune.problems(b, names, s["cut"], unfreeze):
            p, f = _where(o, key)
            c.error(p, message, file=f)


# --- regression thresholds (`tlbench compare`) ----------------------------------------------

REGRESSION_METRICS = ("time", "throughput", "accuracy")


def threshold(metric: str, v) -> float:
    """A regression threshold, normalised: time/throughput as a fraction (0.10 or '10%'), accuracy in points.

    A bare time/throughput number of 1 or more is refused: '10' almost always means 10 %, not 1000 %.
    """
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    text = str(v).strip()
    try:
        f = float(text[:-1]) / 100 if metric != "accuracy" and text.endswith("%") else float(text)
    except ValueError:
        f = None
    if metric == "accuracy":
        if f is None or not 0 < f <= 100:
            raise ValueError(f"expected accuracy points between 0 and 100 (2 = two points), got {v!r}")
        return f
    if f is None or not f > 0 or (not text.endswith("%") and f >= 1) or (metric == "throughput" and f >= 1):
        raise ValueError(f"expected a fraction such as 0.10 or a percentage such as 10%, got {v!r}")
    return f


def _thresholds(c, values: dict, path: tuple) -> dict:
    out = {}
    for k in REGRESSION_METRICS:
        if k in values:
            try:
                out[k] = threshold(k, values[k])
            except ValueError as e:
                c.error(path + (k,), str(e))
    return out


def _regression(c, data, matrix) -> dict:
    raw = data.get("regression")
    if raw is None:
        return {}
    p = ("regression",)
    raw = c.mapping(raw, p, set(REGRESSION_METRICS) | {"overrides"})
    out = _thresholds(c, raw, p)
    rules = raw.get("overrides")
    if rules is None:
        return out
    if not isinstance(rules, list):
        c.error(p + ("overrides",), "expected a list of {match: {AXIS: names}, METRIC: threshold}")
        return out
    out["overrides"] = []
    for i, rule in enumerate(rules):
        rp = p + ("overrides", i)
        rule = c.mapping(rule, rp, set(REGRESSION_METRICS) | {"match"})
        match = {}
        for axis, v in c.mapping(rule.get("match"), rp + ("match",), set(AXES)).items():
            names = v if isinstance(v, list) else [v]
            for n in names:
                if axis in AXES and n not in matrix.get(axis, []):
                    c.error(rp + ("match", axis), f"'{n}' is not in matrix.{axis} "
                            f"({', '.join(map(str, matrix.get(axis, []))) or 'empty'}): this threshold would never apply")
            match[axis] = names
        values = _thresholds(c, rule, rp)
        if not rule.get("match") or not any(k in rule for k in REGRESSION_METRICS):
            c.error(rp, f"needs 'match' and at least one of {', '.join(REGRESSION_METRICS)}")
        out["overrides"].append({"match": match, **values})
    return out


def load_regression(path: str | Path) -> dict:
    """Only the `regression:` key of a suite (e.g. the copy in a results folder).

    The rest is not validated: a stored suite's relative dataset paths or data need not exist where
    results are compared.
    """
    data, c = read(Path(path))
    m = data.get("matrix") if isinstance(data.get("matrix"), dict) else {}
    matrix = {a: v if isinstance(v, list) else [v] for a, v in m.items() if a in AXES}
    out = _regression(c, data, matrix)
    if c.errors:
        raise SuiteErrors(c.errors)
    return out
