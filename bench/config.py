"""The fully resolved configuration of one run, and its stable id."""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields

# Fields that name or group a run but do not change what it measures: left out of the id,
# so the same run in two suites (or renamed suites) is recognised as the same run.
_NOT_IDENTITY = {"suite"}
# ...and left out when runs are matched across result sets, where repeats of a config form one group.
NOT_MATCHED = {"suite", "repeat"}


def complete(config: dict) -> dict:
    """A stored configuration with the fields added since it was written set to their defaults, so that a
    record of an older tlbench reads, groups and matches like a new one of the same settings."""
    return {**{f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}, **config}


def match_key(record: dict) -> str:
    """A stored run's configuration without suite name and repeat: what compare and plot match on."""
    return json.dumps({k: v for k, v in complete(record["config"]).items() if k not in NOT_MATCHED},
                      sort_keys=True, default=str)


@dataclass(frozen=True)
class RunConfig:
    suite: str
    backbone: str
    dataset: str
    mode: str
    repeat: int
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    loss: str
    input_size: int
    head: dict
    train_size: int | None
    val_size: int | None
    seed: int
    precision: str
    jit_compile: str
    steps_per_execution: int
    weights: str
    dataset_params: dict = field(default_factory=dict)
    backend: str = "tensorflow"  # the Keras backend; runs of another backend run in a child process
    # A suite's name for a variant of `mode` (its `modes:` key), e.g. cut-early; None for a plain mode.
    strategy: str | None = None
    # Where the backbone is cut (a layer name or a preset of its backbone); None: the whole backbone.
    cut: str | None = None
    # Which backbone layers train and whether BatchNorm does (finetune.py). None: the mode's default, so a
    # run that does not set them keeps the id it had before these settings existed.
    unfreeze: str | None = None
    batchnorm: str | None = None
    # How it trains (recipes.py): a canonical recipe name; None is the documents' classic recipe.
    recipe: str | None = None
    # Data parallel over this many devices, or "all" (distribute.py); None: one device.
    devices: int | str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def digest(self) -> str:
        # A setting left at its None default is left out, so adding a setting does not change the ids of
        # the runs that do not use it.
        unset = {f.name for f in fields(self) if f.default is None and getattr(self, f.name) is None}
        ident = {k: v for k, v in self.to_dict().items() if k not in _NOT_IDENTITY | unset}
        blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def run_id(self) -> str:
        backend = f"{self.backend}-" if self.backend != "tensorflow" else ""
        return f"{backend}{self.backbone}-{self.dataset}-{self.kind}-r{self.repeat}-{self.digest[:10]}"

    @property
    def kind(self) -> str:
        """What a table row is named by: the suite's strategy name, or the mode."""
        return self.strategy or self.mode

    @property
    def label(self) -> str:
        return (f"{self.backbone} · {self.dataset} · {self.kind}" + (f" · {self.backend}" if self.backend != "tensorflow"
                else "") + (f" · repeat {self.repeat}" if self.repeat else ""))
