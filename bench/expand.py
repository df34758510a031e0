"""A suite's runs: each combination of its matrix resolved (its mode's settings, then the matching overrides;
--set beats both), cross-checked, and repeated round-robin."""
from __future__ import annotations

import copy
import dataclasses
import math

from . import finetune
from .backbones import BACKBONES
from .config import RunConfig
from .crosscheck import check_run
from .datasets import DATASETS
from .matrix import combinations, swept
from .overrides import matches
from .settings import SETTINGS, head

MAX_RUNS = 100_000


def runs(c, name, settings, origin, matrix, includes, rules, custom, named) -> list[RunConfig]:
    """Every run, repeat by repeat: round-robin over the configurations, so that a drift of the machine's
    speed during a suite spreads over all modes instead of falling on the one whose repeats ran last."""
    products = [matrix, *includes]
    combos = sum(math.prod(len(v) for v in p.values()) for p in products)
    if combos * max(settings["repeats"], 1) > MAX_RUNS:
        c.error(("matrix",), f"expands to {combos:,} combinations × {settings['repeats']} repeats: more than "
                f"{MAX_RUNS:,} runs; split the suite")
        return []
    by_repeat: dict[int, list[RunConfig]] = {}
    axes, seen = swept(matrix, includes), {}
    for at in combinations(products):
        if at["dataset"] in c.broken["dataset"] or at["mode"] in c.broken["mode"]:
            continue
        mode, s, o = _resolve(c, at, settings, origin, rules, named)
        check_run(c, at, mode, s, o, custom)
        for run in _repeats(name, at, mode, s, custom, named):
            _check_twin(c, run, ", ".join(f"{a}={at[a]}" for a in at if len(axes[a]) > 1), seen)
            by_repeat.setdefault(run.repeat, []).append(run)
    return [run for r in sorted(by_repeat) for run in by_repeat[r]]


def _resolve(c, at: dict, settings: dict, origin: dict, rules: list, named: dict) -> tuple[str, dict, dict]:
    """A combination's base mode, settings and where each setting was given."""
    s, o = copy.deepcopy(settings), dict(origin)
    for k in (a for a in at if a in SETTINGS):
        s[k], o[k] = at[k], ("matrix", k)
    mode, values, paths = named.get(at["mode"], (at["mode"], {}, {}))
    layers = [(values, paths)] + [(v, p) for match, v, p in rules if matches(match, {**s, **at})]
    for values, paths in layers:
        for k, v in values.items():
            if k in c.cli:  # --set beats the file's modes and overrides
                continue
            s[k] = head(v, s["head"]) if k == "head" else v
            o[k] = paths[k]
    s["input_size"] = s["input_size"] or BACKBONES.get(at["backbone"]).default_size
    return mode, s, o


def _repeats(name: str, at: dict, mode: str, s: dict, custom: dict, named: dict) -> list[RunConfig]:
    unfreeze, batchnorm = finetune.canonical(mode, s["unfreeze"], s["batchnorm"], s["recipe"])
    dataset = at["dataset"]
    params = custom[dataset] if dataset in custom else {"type": dataset, **DATASETS.get(dataset).params}
    return [RunConfig(
        suite=name, backend=at["backend"], backbone=at["backbone"], dataset=dataset, mode=mode, repeat=r,
        epochs=s["epochs"], batch_size=s["batch_size"], optimizer=s["optimizer"],
        learning_rate=s["learning_rate"], loss=s["loss"], input_size=s["input_size"], head=s["head"],
        train_size=s["train_size"], val_size=s["val_size"], seed=s["seed"], precision=s["precision"],
        jit_compile=s["jit_compile"], steps_per_execution=s["steps_per_execution"],
        weights=s["weights"], dataset_params=params, strategy=at["mode"] if at["mode"] in named else None,
        cut=s["cut"], unfreeze=unfreeze, batchnorm=batchnorm, recipe=s["recipe"],
        devices=s["devices"]) for r in range(s["repeats"])]


def _check_twin(c, run: RunConfig, where: str, seen: dict) -> None:
    """The same settings under two names would measure one thing twice and table it as two. Not judged once a
    value was refused: its runs hold the default, which may make two entries alike."""
    same = dataclasses.replace(run, strategy=None).digest
    if same in seen and not c.refused:
        c.error(("matrix",), f"two matrix entries give the same run ({seen[same]}; {where}): "
                "a mode or override sets them to identical settings")
    seen.setdefault(same, where)
