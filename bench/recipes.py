"""Training recipes: how a run trains, as data. The documents' 2017 recipe and a modern fine-tuning recipe.

  recipe: classic | modern | {base: classic | modern, COMPONENT: value, ...}     (a setting, so a matrix axis)

classic is the Udacity transfer-learning lab's protocol: one stage, the suite's optimizer at its learning
rate for every layer, BatchNorm training while fine-tuning, no schedule, no augmentation, hard labels.

modern changes seven components; each can be switched alone on either base, so an ablation can attribute
the gap (`{base: classic, batchnorm: frozen}`). Each choice and its source:

  head_epochs: 1       the head trains alone on the frozen backbone first, then the backbone joins: Keras's
                       guide "Transfer learning & fine-tuning" (keras.io/guides/transfer_learning); Kumar et
                       al. 2022, "Fine-Tuning can Distort Pretrained Features" (LP-FT: a random head's large
                       gradients distort the features; a trained head does not).
  finetune_lr: 0.1     while backbone layers train, the learning rate is 10x lower: Keras's guide (1e-5 after
                       the head's 1e-3); Howard & Ruder 2018, ULMFiT (lower rates for pretrained layers).
  batchnorm: frozen    BatchNorm in inference mode while fine-tuning (moving statistics and scale kept):
                       Keras's guide; a small batch's statistics are noisy estimates of ImageNet's.
  weight_decay: 0.05   decoupled weight decay, i.e. AdamW: Loshchilov & Hutter 2019, "Decoupled Weight
                       Decay Regularization"; 0.05 is DeiT's (Touvron et al. 2021) and ConvNeXt's fine-tuning value.
  schedule: warmup-cosine   per stage, a linear warm-up over its first WARMUP of steps, then cosine decay to
                       zero: Goyal et al. 2017, "Accurate, Large Minibatch SGD" (warm-up); Loshchilov & Hutter
                       2017, SGDR (cosine); He et al. 2019, "Bag of Tricks" (both, for fine-tuning too).
  augment: light       random horizontal flip where a mirrored image keeps its class (not digits), and random
                       translations of up to TRANSLATE of the size (a pad-and-crop): Keras's guide (flip);
                       He et al. 2016 / Krizhevsky et al. 2012 (flips and crops). Keras layers inside the model,
                       active only while training, so they run on the device under any backend.
  label_smoothing: 0.1 Szegedy et al. 2016, "Rethinking the Inception Architecture" (InceptionV3's paper,
                       the documents' own backbone); Müller et al. 2019, "When Does Label Smoothing Help?".

The stages together use the run's `epochs`; each epoch's record names its stage (1 or 2).
A component that cannot apply to a run's mode is not applied, and the record says why (`resolve`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml

from .modes import MODES

WARMUP = 0.1  # of each stage's steps
TRANSLATE = 0.1  # of the image height and width
SCHEDULES = ("constant", "warmup-cosine")
AUGMENTS = ("none", "light")


@dataclass(frozen=True)
class Recipe:
    head_epochs: int = 0  # epochs of the head alone before the backbone trains; 0: one stage
    finetune_lr: float = 1.0  # learning-rate factor while backbone layers train
    batchnorm: str | None = None  # BatchNorm while fine-tuning: frozen | train; None: the mode's default
    weight_decay: float = 0.0  # decoupled (AdamW-style); 0: none
    schedule: str = "constant"
    augment: str = "none"
    label_smoothing: float = 0.0


RECIPES = {
    "classic": Recipe(),
    "modern": Recipe(head_epochs=1, finetune_lr=0.1, batchnorm="frozen", weight_decay=0.05,
                     schedule="warmup-cosine", augment="light", label_smoothing=0.1),
}
COMPONENTS = tuple(f.name for f in dataclasses.fields(Recipe))


def _component(key: str, v):
    """A component's value, checked; ValueError names the valid values."""
    def number(lo, hi, integer=False):
        ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) and lo <= v <= hi
        if not ok:
            raise ValueError(f"recipe.{key} must be {'an integer' if integer else 'a number'} from {lo} to {hi}, "
                             f"got {v!r}")
        return v if integer else float(v)

    def choice(valid):
        if v not in valid:
            raise ValueError(f"recipe.{key} must be one of {', '.join(map(str, valid))}, got {v!r}")
        return v

    return {"head_epochs": lambda: number(0, 1000, integer=True), "finetune_lr": lambda: number(1e-6, 1.0),
            "batchnorm": lambda: choice((None, "frozen", "train")), "weight_decay": lambda: number(0.0, 1.0),
            "schedule": lambda: choice(SCHEDULES), "augment": lambda: choice(AUGMENTS),
            "label_smoothing": lambda: number(0.0, 0.5)}[key]()


def parse(v) -> str | None:
    """A suite's recipe value -> its canonical name: 'modern', 'classic+batchnorm=frozen'; None for classic.

    Accepts a name, a mapping {base: NAME, COMPONENT: value} and the canonical text itself (as `--set` and
    stored records give it). Components equal to the base's are dropped, so one recipe has one name and its
    runs one id; classic is None, so runs written before recipes existed keep theirs.
    """
    if isinstance(v, str) and "+" in v:
        base, *parts = v.split("+")
        pairs = [p.partition("=") for p in parts]
        if not all(sep for _, sep, _ in pairs):
            raise ValueError(f"expected NAME+COMPONENT=VALUE..., got {v!r}")
        v = {"base": base, **{k: _read(val) for k, _, val in pairs}}
    if isinstance(v, str) or v is None:
        v = {"base": v}
    if not isinstance(v, dict):
        raise ValueError(f"expected {' or '.join(RECIPES)} or a mapping {{base: NAME, COMPONENT: value}}, got {v!r}")
    base = v.get("base")
    if base not in RECIPES:
        raise ValueError(f"unknown recipe {base!r}; valid: {', '.join(RECIPES)}"
                         + ("" if "base" in v else " (a mapping needs 'base')"))
    changes = {}
    for key, value in v.items():
        if key == "base":
            continue
        if key not in COMPONENTS:
            raise ValueError(f"unknown recipe component {key!r}; valid: {', '.join(COMPONENTS)}")
        value = _component(key, value)
        if value != getattr(RECIPES[base], key):
            changes[key] = value
    name = "+".join([base] + [f"{k}={'null' if changes[k] is None else changes[k]}" for k in COMPONENTS
                                      if k in changes])
    return None if name == "classic" else name


def name(stored: str | None) -> str:
    """A stored recipe as people name it: the classic recipe is stored as None."""
    return stored or "classic"


def components(name: str | None) -> Recipe:
    """The recipe a canonical name stands for, every component given."""
    base, *parts = (name or "classic").split("+")
    return dataclasses.replace(RECIPES[base], **{k: _read(v) for k, _, v in (p.partition("=") for p in parts)})


def _read(text: str):
    """A component's value in a canonical name, as YAML reads it; '1e-05' too (YAML 1.1 wants a dot)."""
    value = yaml.safe_load(text)
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


@dataclass(frozen=True)
class Stage:
    number: int
    first_epoch: int
    last_epoch: int
    trains: str  # "head": the backbone frozen; "backbone": the layers `unfreeze` names train with the head
    learning_rate: float

    @property
    def epochs(self) -> int:
        return self.last_epoch - self.first_epoch + 1


def resolve(config) -> tuple[Recipe, dict[str, str]]:
    """The recipe as it applies to this run, and why each component that does not apply is left out."""
    return applied(config.mode, config.unfreeze, config.recipe)


def applied(mode_name: str, unfreeze: str | None, name: str | None) -> tuple[Recipe, dict[str, str]]:
    recipe, mode, classic = components(name), MODES.get(mode_name), RECIPES["classic"]
    off: dict[str, str] = {}
    if not mode.trainable:
        for key in ("head_epochs", "finetune_lr", "batchnorm"):
            off[key] = f"mode {mode_name}: no backbone layer trains"
    elif not mode.pretrained:
        for key in ("head_epochs", "finetune_lr", "batchnorm"):
            off[key] = "from scratch: nothing pretrained to protect (BatchNorm must learn its statistics)"
    elif unfreeze == "none":
        off["head_epochs"] = off["finetune_lr"] = "unfreeze: none: no backbone layer trains"
    if mode.cached_features:
        off["augment"] = "cached features are computed once, from unaugmented images"
    off = {k: why for k, why in off.items() if getattr(recipe, k) != getattr(classic, k)}
    return dataclasses.replace(recipe, **{k: getattr(classic, k) for k in off}), off


def stages(config) -> list[Stage]:
    """The run's epochs split into the head stage and the fine-tuning stage (or one stage)."""
    recipe, _ = resolve(config)
    mode = MODES.get(config.mode)
    trains = "backbone" if mode.trainable and config.unfreeze != "none" else "head"
    tuned = config.learning_rate * (recipe.finetune_lr if trains == "backbone" else 1.0)
    if trains == "backbone" and recipe.head_epochs:
        h = recipe.head_epochs
        return [Stage(1, 1, h, "head", config.learning_rate), Stage(2, h + 1, config.epochs, "backbone", tuned)]
    return [Stage(1, 1, config.epochs, trains, tuned)]


def problems(config_values: dict, mode: str) -> list[tuple[str, str]]:
    """(setting, message) for a recipe that cannot run with these settings: checked before anything runs."""
    recipe = components(config_values["recipe"])
    out, m = [], MODES.get(mode)
    if recipe.head_epochs and m.pretrained and m.trainable and config_values["unfreeze"] != "none" \
            and recipe.head_epochs >= config_values["epochs"]:
        out.append(("recipe", f"the head stage takes {recipe.head_epochs} of {config_values['epochs']} epochs: "
                    "none would be left to fine-tune; raise epochs or lower recipe.head_epochs"))
    if recipe.label_smoothing and config_values["loss"] != "categorical_crossentropy":
        out.append(("recipe", f"label smoothing needs loss categorical_crossentropy (Keras's "
                    f"{config_values['loss']} has no label_smoothing)"))
    return out


def describe(config) -> dict:
    """What a record keeps: the recipe's name, its components as given and as applied, and the stages."""
    recipe, off = resolve(config)
    return {"name": name(config.recipe), "components": dataclasses.asdict(components(config.recipe)),
            "applied": dataclasses.asdict(recipe), "not_applied": off,
            "stages": [{**dataclasses.asdict(s), "epochs": s.epochs} for s in stages(config)]}
