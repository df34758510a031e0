"""Suite files: read the YAML, validate every key with its line number, expand into RunConfigs.

Schema (README "Suite files" documents it for users):

  name: str                      required; also the results folder name
  description: str
  defaults: {SETTING: value}     see settings.SETTINGS
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
  reference: NAME                a published table (report.REFERENCES) to set beside the results
                                 (bench/references/NAME.yaml)
  resources: {cpus: N, gpus: N}  what each run reserves on a node under `run --executor ray` (not a setting:
                                 no run's config or key holds it)

One module per job: suite_yaml (the file, each key's line, the error collector), settings (each setting's
check and default), matrix (axes, include entries, --set), overrides (rules and their one matcher), expand
(the runs), crosscheck (each run against its backbone, weights, data and backend), and compare (the
regression thresholds). Every problem is collected before anything is refused, so one pass names them all.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import expand, matrix, recipes
from .config import RunConfig
from .datasets import DATASETS
from .errors import SuiteErrors, short, unknown
from .matrix import AXES
from .modes import MODES
from .overrides import rules as override_rules
from .settings import DEFAULTS, SETTINGS, check_settings, dataset_param
from .suite_yaml import parse_set, read

# Names other modules and tests take from here, where they were before the split.
__all__ = ["AXES", "SAFE_NAME", "SETTINGS", "Suite", "TOP_KEYS", "load", "parse_set", "read"]

# What a name that becomes a folder or goes into a run id (and so a file name) may hold.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESOURCES = {"cpus": "CPU cores each run reserves on a Ray node", "gpus": "GPUs each run reserves on a Ray node"}
TOP_KEYS = {"name", "description", "defaults", "matrix", "overrides", "datasets", "modes", "regression", "reference",
            "resources"}


@dataclass
class Suite:
    name: str
    description: str
    file: str
    runs: list[RunConfig]
    # Thresholds `tlbench compare` applies to this suite's results (compare.regression_block); only what was given.
    regression: dict = field(default_factory=dict)
    reference: str | None = None  # name of a published table (report.REFERENCES)
    axes: list[str] = field(default_factory=list)  # settings the matrix sweeps (shown beside each run's name)
    # What the runs will fetch from the network (weights, data not on this machine): said before they start.
    notes: list[str] = field(default_factory=list)
    # What each run asks of a cluster node ({cpus: 4, gpus: 1}): a scheduling request, so in no run's config or key.
    resources: dict = field(default_factory=dict)
    # The part of the suite this invocation runs ('1/4', from --shard: shard.apply); None for the whole suite.
    shard: str | None = None

    def describe(self, run: RunConfig) -> str:
        """The run's name with the values of the swept settings: 'mobilenet_v2 · mnist · frozen · train_size=250'."""
        return " · ".join([run.label] + [f"{k}={recipes.name(run.recipe) if k == 'recipe' else getattr(run, k)}"
                                         for k in self.axes])


def load(path: str | Path, overrides: list[tuple[str, Any]] = ()) -> Suite:
    """Read, validate and expand a suite; raise SuiteErrors listing every problem found."""
    path = Path(path)
    data, c = read(path)
    c.mapping(data, (), TOP_KEYS)
    name = _name(c, data)
    settings, origin = _settings(c, data)
    custom = _datasets(c, data, path.parent)
    named = _modes(c, data)
    valid = matrix.valid_names(c, custom, named)
    grid, includes = matrix.parse(c, data, valid, named, settings)
    rules = override_rules(c, data, matrix.swept(grid, includes), settings)
    regression = _regression(c, data, matrix.swept(grid, includes))
    reference = _reference(c, data)
    resources = _resources(c, data)
    matrix.apply_cli(c, overrides, settings, origin, [grid, *includes], valid)
    runs = expand.runs(c, name, settings, origin, grid, includes, rules, custom, named)
    if c.errors:
        raise SuiteErrors(c.errors)
    swept = [k for k in matrix.swept(grid, includes)
             if k in SETTINGS and len({matrix.json_text(getattr(r, k)) for r in runs}) > 1]
    return Suite(name, data.get("description") or "", str(path), runs, regression, reference, swept, c.notes,
                 resources)


def _resources(c, data) -> dict:
    """`resources: {cpus: N, gpus: N}`: what each run asks of a node under `--executor ray`."""
    out = {}
    for k, v in c.mapping(data.get("resources"), ("resources",), RESOURCES).items():
        if k in RESOURCES and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1024):
            c.error(("resources", k), f"{RESOURCES[k]}: a number from 0 to 1024, got {short(v)}")
        elif k in RESOURCES:
            out[k] = v
    return out


def _name(c, data) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > 100:
        c.error(("name",), "required: the results folder's name, 1 to 100 letters, digits, '-', '_' or '.' "
                f"(starting with a letter or digit, no '..'), got {short(name)}")
    return name


def _reference(c, data) -> str | None:
    reference = data.get("reference")
    if reference is None:
        return None
    from .report import reference_names  # the report's data; imported only for a suite that names one

    if reference not in reference_names():
        c.error(("reference",), unknown("reference", reference, reference_names()))
    return reference


def _regression(c, data, swept: dict[str, list]) -> dict:
    """The `regression:` block, checked where its thresholds are used. compare is imported only for a suite
    that has one: it reads results with pandas and is no part of a run."""
    if data.get("regression") is None:
        return {}
    from .compare import regression_block

    return regression_block(c, data["regression"], {a: swept.get(a, []) for a in AXES})


def _settings(c, data):
    settings = copy.deepcopy(DEFAULTS)
    given = check_settings(c, data.get("defaults"), ("defaults",), settings)
    settings.update(given)
    origin = {k: ("defaults", k) for k in given}
    return settings, origin


def _datasets(c, data, base_dir: Path) -> dict[str, dict]:
    """The suite's named datasets: name -> {type, PARAM: value}. One with an error is left out and marked broken,
    so that the matrix may still name it and its runs are not cross-checked against a half-read declaration."""
    custom = {}
    for name, spec in c.mapping(data.get("datasets"), ("datasets",)).items():
        errors = len(c.errors)
        params = _dataset(c, ("datasets", name), spec, base_dir)
        if params is None or len(c.errors) > errors:
            c.broke("dataset", name)
        else:
            custom[name] = params
    return custom


def _dataset(c, p: tuple, spec, base_dir: Path) -> dict | None:
    name = p[-1]
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or len(name) > 60:
        c.error(p, f"a dataset name goes into run ids and file names: up to 60 letters, digits, '-', '_', '.'; "
                f"got {short(name)}")
        return None
    spec = c.mapping(spec, p)
    dtype = spec.get("type", name)
    if dtype not in DATASETS:
        c.error(p + ("type",), unknown("dataset type", dtype, DATASETS.names()))
        return None
    known = DATASETS.get(dtype).params
    params = dict(known)
    for k, v in spec.items():
        if k == "type":
            continue
        if k not in known:
            c.error(p + (k,), unknown(f"{dtype} parameter", k, known))
            continue
        try:
            params[k] = dataset_param(k, v, known[k], base_dir)
        except ValueError as e:
            c.error(p + (k,), str(e))
    for k, v in params.items():
        if v is None:
            c.error(p, f"{dtype} needs '{k}'")
    return {"type": dtype, **params}


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
            c.broke("mode", name)
            continue
        spec = c.mapping(spec, p, {"type", *SETTINGS})
        base = spec.get("type")
        if base not in MODES:
            c.error(p + ("type",) if "type" in spec else p,
                    unknown("mode", base, MODES.names()) if "type" in spec else
                    f"needs 'type': the mode it varies, one of {', '.join(MODES.names())}")
            c.broke("mode", name)
            continue
        values = check_settings(c, {k: v for k, v in spec.items() if k in SETTINGS}, p, DEFAULTS)
        named[name] = (base, values, {k: p + (k,) for k in values})
    return named
