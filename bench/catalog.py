"""What a suite can name, one line each: `tlbench ls backbones|datasets|modes|weights|references`.

Read from the registries and presets themselves, so the list is what a suite accepts; nothing here
imports a Keras backend.
"""
from __future__ import annotations

from typing import Callable, Iterator

from .backbones import BACKBONES
from .datasets import DATASETS
from .errors import UserError, unknown
from .modes import MODES
from .weights import WEIGHTS

Rows = Iterator[tuple[str, str]]  # (name, description)


def _backbones() -> Rows:
    for name in BACKBONES:
        b = BACKBONES.get(name)
        options = "".join(f", {k} {v}" for k, v in b.kwargs.items())
        yield name, (f"keras.applications.{b.constructor}{options}: {b.default_size} px by default, at least "
                     f"{b.min_size}; {b.preprocessing} preprocessing; cut: {', '.join(b.cuts) or 'none'}")


def _datasets() -> Rows:
    for name in DATASETS:
        d = DATASETS.get(name)
        said = [] if None in d.params.values() else ["{:,} train / {:,} test images".format(*d.counts(d.params))]
        if d.params:  # set under the suite's `datasets:` key, with `type: NAME`
            said.append("settings: " + ", ".join(f"{k} (required)" if v is None else f"{k} {v}"
                                                 for k, v in d.params.items()))
        yield name, "; ".join(said)


def _modes() -> Rows:
    for name in MODES:
        m = MODES.get(name)
        yield name, (f"{m.label}: {'pretrained' if m.pretrained else 'random'} weights, backbone "
                     f"{'trained' if m.trainable else 'frozen'}"
                     + ("; its features computed once and cached, the head trained on them" if m.cached_features
                        else ""))


def _weights() -> Rows:
    for name in WEIGHTS:
        w = WEIGHTS.get(name)
        yield name, w.describe + (f" (backbones: {', '.join(w.backbones)})" if w.backbones else "")
    yield "PATH.h5, PATH.keras", "a Keras weights file of the run's backbone"


def _references() -> Rows:
    from .report import load_reference, reference_names

    for name in reference_names():
        yield name, load_reference(name)["title"]


CATEGORIES: dict[str, Callable[[], Rows]] = {"backbones": _backbones, "datasets": _datasets, "modes": _modes,
                                             "weights": _weights, "references": _references}


def lines(category: str) -> list[str]:
    if category not in CATEGORIES:
        raise UserError(f"tlbench ls: {unknown('category', category, CATEGORIES)}")
    rows = list(CATEGORIES[category]())
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {text}" for name, text in rows]
