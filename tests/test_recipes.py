"""Recipes (bench/recipes.py): names, stages, what each mode applies, the suite's include, and a real run."""
import json
import textwrap

import pytest

from bench import finetune, recipes, suite
from bench.config import RunConfig
from bench.errors import SuiteErrors
from conftest import ROOT, tlbench

BASE = """\
name: r
defaults:
  epochs: 5
  train_size: 100
  val_size: 50
  input_size: 32
  weights: none
matrix:
  backbone: mobilenet_v2_035
  dataset: fashion_mnist
  mode: [frozen, unfrozen, scratch]
  recipe: [classic, modern]
"""


def _runs(write_suite, text=BASE, sets=()):
    return suite.load(write_suite(text), suite.parse_set(list(sets))).runs


def _errors(write_suite, text, sets=()):
    with pytest.raises(SuiteErrors) as e:
        _runs(write_suite, text, sets)
    return [str(x) for x in e.value.errors]


@pytest.mark.parametrize("value, name", [
    ("classic", None), ("modern", "modern"), ({"base": "classic", "batchnorm": "frozen"}, "classic+batchnorm=frozen"),
    ({"base": "classic", "augment": "none"}, None),  # a component equal to its base's is no change
    ({"base": "modern", "label_smoothing": 0, "augment": "none"}, "modern+augment=none+label_smoothing=0.0"),
    ({"base": "classic", "finetune_lr": 1e-5}, "classic+finetune_lr=1e-05"),
    ("classic+finetune_lr=1e-05", "classic+finetune_lr=1e-05"),  # the stored name reads back as itself
])
def test_a_recipe_has_one_canonical_name(value, name):
    assert recipes.parse(value) == name
    if name:
        assert recipes.parse(name) == name


@pytest.mark.parametrize("value, message", [
    ("modrn", "unknown recipe 'modrn'; valid: classic, modern"),
    ({"base": "classic", "lr": 1}, "unknown recipe component 'lr'; valid: head_epochs, finetune_lr, batchnorm"),
    ({"base": "modern", "schedule": "step"}, "recipe.schedule must be one of constant, warmup-cosine, got 'step'"),
    ({"base": "classic", "label_smoothing": 0.9}, "recipe.label_smoothing must be a number from 0.0 to 0.5"),
    ({"batchnorm": "frozen"}, "(a mapping needs 'base')"),
])
def test_bad_recipes_say_what_is_valid(value, message):
    with pytest.raises(ValueError) as e:
        recipes.parse(value)
    assert message in str(e.value)


def test_modern_stages_split_the_epochs_and_lower_the_rate(write_suite):
    runs = {(r.mode, recipes.name(r.recipe)): r for r in _runs(write_suite)}
    unfrozen = recipes.stages(runs["unfrozen", "modern"])
    assert [(s.number, s.first_epoch, s.last_epoch, s.trains, s.learning_rate) for s in unfrozen] == [
        (1, 1, 1, "head", 0.001), (2, 2, 5, "backbone", pytest.approx(1e-4))]
    # nothing pretrained to protect: one stage at the suite's rate, BatchNorm learns
    assert [(s.trains, s.learning_rate) for s in recipes.stages(runs["scratch", "modern"])] == [("backbone", 0.001)]
    applied, off = recipes.resolve(runs["scratch", "modern"])
    assert (applied.head_epochs, applied.finetune_lr, applied.batchnorm) == (0, 1.0, None)
    assert "from scratch" in off["batchnorm"]
    assert (applied.augment, applied.weight_decay, applied.schedule) == ("light", 0.05, "warmup-cosine")
    assert [s.trains for s in recipes.stages(runs["frozen", "modern"])] == ["head"]
    # the classic recipe is today's: one stage at the suite's rate for every mode
    assert all(len(recipes.stages(runs[m, "classic"])) == 1 for m in ("frozen", "unfrozen", "scratch"))


def test_batchnorm_follows_the_recipe_unless_the_suite_sets_it(write_suite):
    runs = {(r.mode, recipes.name(r.recipe)): r for r in _runs(write_suite)}
    assert finetune.batchnorm(runs["unfrozen", "modern"]) == "frozen"
    assert finetune.batchnorm(runs["unfrozen", "classic"]) == "train"
    assert finetune.batchnorm(runs["scratch", "modern"]) == "train"
    explicit = _runs(write_suite, BASE.replace("  weights: none\n", "  weights: none\n  batchnorm: train\n")
                     .replace("[frozen, unfrozen, scratch]", "unfrozen"))
    assert [(r.recipe, r.batchnorm, finetune.batchnorm(r)) for r in explicit] == [
        (None, None, "train"), ("modern", "train", "train")]


def test_cached_features_do_not_pretend_to_augment(write_suite):
    (run,) = _runs(write_suite, BASE.replace("[frozen, unfrozen, scratch]", "frozen-cached").replace(
        "[classic, modern]", "modern"))
    described = recipes.describe(run)
    assert described["applied"]["augment"] == "none" and described["components"]["augment"] == "light"
    assert "computed once" in described["not_applied"]["augment"]


def test_include_adds_an_ablation_to_one_mode_only(write_suite):
    text = BASE + textwrap.indent(textwrap.dedent("""\
        include:
          - mode: unfrozen
            recipe:
              - {base: classic, batchnorm: frozen}
              - {base: classic, augment: light}
              - modern
        """), "  ")
    runs = _runs(write_suite, text)
    assert [(r.mode, recipes.name(r.recipe)) for r in runs] == [
        ("frozen", "classic"), ("frozen", "modern"), ("unfrozen", "classic"), ("unfrozen", "modern"),
        ("scratch", "classic"), ("scratch", "modern"),
        ("unfrozen", "classic+batchnorm=frozen"), ("unfrozen", "classic+augment=light")]  # modern: already there
    narrowed = _runs(write_suite, text, ["mode=frozen"])
    assert [(r.mode, recipes.name(r.recipe)) for r in narrowed] == [("frozen", "classic"), ("frozen", "modern"),
                                                                  ("frozen", "classic+batchnorm=frozen"),
                                                                  ("frozen", "classic+augment=light")]
    assert [recipes.name(r.recipe) for r in _runs(write_suite, text, ["recipe=modern"])] == ["modern"] * 3


@pytest.mark.parametrize("change, expected", [
    (("[classic, modern]", "{base: modern, head_epochs: 5}"),
     "suite.yaml:12: matrix.recipe: the head stage takes 5 of 5 epochs: none would be left to fine-tune"),
    (("  weights: none\n", "  weights: none\n  loss: sparse_categorical_crossentropy\n"),
     "suite.yaml:13: matrix.recipe: label smoothing needs loss categorical_crossentropy"),
    (("[classic, modern]", "[classic, modrn]"), "suite.yaml:12: matrix.recipe[1]: unknown recipe 'modrn'"),
    (("  recipe: [classic, modern]\n", "  include:\n    - {mode: unfrozen, recipes: modern}\n"),
     "suite.yaml:13: matrix.include[0].recipes: unknown key 'recipes' (did you mean 'recipe'?)"),
    (("  recipe: [classic, modern]\n", "  include:\n    - {}\n"), "matrix.include[0]: an include entry names"),
    (("  recipe: [classic, modern]\n", "  include:\n    - {mode: unfozen}\n"),
     "suite.yaml:13: matrix.include[0].mode: unknown mode 'unfozen' (did you mean 'unfrozen'?)"),
])
def test_bad_recipes_in_a_suite_name_file_line_and_key(write_suite, change, expected):
    errs = _errors(write_suite, BASE.replace(*change))
    assert any(expected in e for e in errs), errs


def test_cli_list_shows_both_recipes_and_the_ablation():
    p = tlbench("list", ROOT / "suites" / "recipes.yaml")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 32  # (3 modes x 2 recipes + 10 recipe variants on unfrozen) x 2 repeats
    shown = [line.split("recipe ")[1] for line in lines[:16]]
    assert shown[:6] == ["classic", "modern"] * 3
    assert shown[6:] == ["classic+head_epochs=1", "classic+finetune_lr=0.1", "classic+batchnorm=frozen",
                         "classic+weight_decay=0.05", "classic+schedule=warmup-cosine", "classic+augment=light",
                         "classic+label_smoothing=0.1", "classic+finetune_lr=0.1+batchnorm=frozen",
                         "modern+head_epochs=0", "modern+batchnorm=train"]
    assert all("-unfrozen-" in line for line in lines[6:16])


def test_a_setting_at_its_none_default_leaves_the_run_id_alone():
    """Records written before a setting existed keep their ids: the published default suite's match again."""
    for path in sorted((ROOT / "results" / "published" / "offline-default" / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        assert RunConfig.from_dict(record["config"]).run_id == record["run_id"] == path.stem


def test_modern_compile_has_the_schedule_decay_smoothing_and_augmentation(write_suite):
    import keras

    from bench import model as model_lib

    runs = {(r.mode, recipes.name(r.recipe)): r for r in _runs(write_suite, BASE.replace(
        "dataset: fashion_mnist", "dataset: cifar10"))}
    config = runs["unfrozen", "modern"]
    model = model_lib.build(config, (32, 32, 3), 10)
    stage1, stage2 = recipes.stages(config)
    model_lib.enter_stage(model, config, stage2)
    model_lib.compile(model, config, stage2, steps_per_epoch=10)
    schedule = model.optimizer.learning_rate if callable(model.optimizer.learning_rate) else \
        model.optimizer._learning_rate
    rate = [float(schedule(step)) for step in (0, 4, 20, 39)]  # 40 steps, warm-up 4
    assert rate[0] == 0.0 and rate[1] == pytest.approx(1e-4) and 0 < rate[3] < rate[2] < 1e-4
    assert model.optimizer.weight_decay == pytest.approx(0.05)
    assert model.loss.label_smoothing == pytest.approx(0.1)
    names = [layer.name for layer in model.layers]
    assert "random_flip" in names and "random_translation" in names  # CIFAR-10 mirrors; digits would not
    assert names.index("random_translation") < names.index(next(n for n in names if n.startswith("mobilenet")))
    # the head stage: the whole backbone frozen; the fine-tuning stage: all but BatchNorm trains
    model_lib.enter_stage(model, config, stage1)
    head_only = model_lib.parameter_counts(model)["trainable"]
    model_lib.enter_stage(model, config, stage2)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert not any(w.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
                   for w in layer.weights)
    assert model_lib.parameter_counts(model)["trainable"] > head_only
    # and under fit: the head stage leaves the backbone as it was, the fine-tuning stage moves its kernels but
    # not BatchNorm's moving statistics
    import numpy as np

    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    y = keras.utils.to_categorical(np.arange(16) % 10, 10)
    kernel = next(w for w in backbone.weights if "kernel" in w.path)
    moving = next(w for w in backbone.weights if "moving_mean" in w.path)
    before = [np.array(kernel), np.array(moving)]
    model_lib.enter_stage(model, config, stage1)
    model_lib.compile(model, config, stage1, steps_per_epoch=2)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.array_equal(np.array(kernel), before[0]) and np.array_equal(np.array(moving), before[1])
    model_lib.enter_stage(model, config, stage2)
    model_lib.compile(model, config, stage2, steps_per_epoch=2)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not np.array_equal(np.array(kernel), before[0]) and np.array_equal(np.array(moving), before[1])
    classic = runs["unfrozen", "classic"]
    m = model_lib.build(classic, (32, 32, 3), 10)
    model_lib.compile(m, classic, recipes.stages(classic)[0], steps_per_epoch=10)
    assert float(m.optimizer.learning_rate) == pytest.approx(1e-3) and m.optimizer.weight_decay is None
    assert m.loss == "categorical_crossentropy" and "random_translation" not in [layer.name for layer in m.layers]
    keras.backend.clear_session()


TINY = """\
name: tiny-recipes
defaults:
  epochs: 3
  batch_size: 16
  input_size: 32
  train_size: 48
  val_size: 32
  weights: none
  head: {dense: [16]}
datasets:
  patterns: {type: synthetic, image_size: 24, classes: 4, train: 64, test: 32}
matrix:
  backend: [tensorflow, jax]
  backbone: mobilenet_v2_035
  dataset: patterns
  mode: unfrozen
  recipe: [classic, modern]
"""


@pytest.mark.slow  # two real two-stage runs, one per backend: ~2 min
@pytest.mark.skipif(not __import__("importlib").util.find_spec("jax"), reason="jax is not installed")
def test_a_two_stage_run_records_its_stages_under_each_backend(tmp_path):
    """weights: none stands in for pretrained weights here (the mode, not the weights, decides the stages)."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    p = tlbench("run", tmp_path / "tiny.yaml", "--results", tmp_path / "results")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    folder = tmp_path / "results" / "tiny-recipes"
    records = [json.loads(f.read_text()) for f in sorted((folder / "runs").glob("*.json"))]
    by = {(r["config"]["backend"], r["recipe"]["name"]): r for r in records}
    assert set(by) == {(b, n) for b in ("tensorflow", "jax") for n in ("classic", "modern")}
    for backend in ("tensorflow", "jax"):
        modern, classic = by[backend, "modern"], by[backend, "classic"]
        assert modern["status"] == "ok", modern["error"]
        assert [(e["epoch"], e["stage"], e["phase"]) for e in modern["epochs"]] == [
            (1, 1, "first"), (2, 2, "first"), (3, 2, "steady")]  # stage 2 compiles again: not steady
        assert [(e["stage"], e["phase"]) for e in classic["epochs"]] == [(1, "first"), (1, "steady"), (1, "steady")]
        stages = modern["recipe"]["stages"]
        assert [(s["trains"], s["learning_rate"]) for s in stages] == [("head", 0.001), ("backbone", 0.0001)]
        assert stages[0]["trainable_params"] < stages[1]["trainable_params"] == modern["params"]["trainable"]
        assert classic["recipe"] == {**classic["recipe"], "name": "classic", "not_applied": {}}
    table = (folder / "table.md").read_text()
    # weights: none, so the rows say the pretrained modes ran on random weights
    assert "| Unfrozen weights · random init · modern |" in table and "| Unfrozen weights · random init |" in table
    assert "## Recipes: the classic recipe of the Udacity lab against a modern one" in (folder / "report.md").read_text()
