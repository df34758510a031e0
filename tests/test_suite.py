"""Suite files: expansion into resolved runs, stable ids, and located errors for bad input."""
import pytest

from bench import suite
from bench.errors import SuiteErrors
from conftest import ROOT, tlbench

BASE = """\
name: t
defaults:
  epochs: 2
  train_size: 100
  val_size: 50
  input_size: 32
  weights: none
matrix:
  backbone: [mobilenet_v2, resnet50]
  dataset: fashion_mnist
  mode: [frozen, scratch]
"""


def errors_of(path, sets=()):
    with pytest.raises(SuiteErrors) as e:
        suite.load(path, suite.parse_set(list(sets)))
    return [str(x) for x in e.value.errors]


def test_expands_matrix_in_order_with_resolved_settings(write_suite):
    s = suite.load(write_suite(BASE))
    assert [(r.backbone, r.mode) for r in s.runs] == [
        ("mobilenet_v2", "frozen"), ("mobilenet_v2", "scratch"), ("resnet50", "frozen"), ("resnet50", "scratch")]
    r = s.runs[0]
    assert (r.epochs, r.batch_size, r.optimizer, r.learning_rate, r.train_size, r.input_size) == (
        2, 32, "adam", 0.001, 100, 32)
    assert r.head == {"pooling": "avg", "dense": [512], "dropout": 0.0, "activation": "relu"}
    assert r.dataset_params == {"type": "fashion_mnist"}


def test_input_size_defaults_to_the_backbone_default(write_suite):
    s = suite.load(write_suite(BASE.replace("  input_size: 32\n", "")))
    assert {r.backbone: r.input_size for r in s.runs} == {"mobilenet_v2": 224, "resnet50": 224}


def test_run_ids_are_stable_distinct_and_ignore_the_suite_name(write_suite):
    a = suite.load(write_suite(BASE)).runs
    b = suite.load(write_suite(BASE.replace("name: t", "name: other"), "b.yaml")).runs
    c = suite.load(write_suite(BASE.replace("epochs: 2", "epochs: 3"), "c.yaml")).runs
    assert [r.run_id for r in a] == [r.run_id for r in b]
    assert len({r.run_id for r in a}) == 4
    assert not {r.run_id for r in a} & {r.run_id for r in c}
    assert a[0].run_id.startswith("mobilenet_v2-fashion_mnist-frozen-r0-")


def test_repeats_expand_and_overrides_apply_where_they_match(write_suite):
    s = suite.load(write_suite(BASE + """\
overrides:
  - match: {backbone: resnet50}
    set: {input_size: 64, head: {dense: [128]}}
  - match: {backbone: resnet50, mode: scratch}
    set: {learning_rate: 1e-4, repeats: 2}
"""))
    got = [(r.backbone, r.mode, r.repeat, r.input_size, r.learning_rate, r.head["dense"]) for r in s.runs]
    assert got == [("mobilenet_v2", "frozen", 0, 32, 0.001, [512]), ("mobilenet_v2", "scratch", 0, 32, 0.001, [512]),
                   ("resnet50", "frozen", 0, 64, 0.001, [128]), ("resnet50", "scratch", 0, 64, 0.0001, [128]),
                   ("resnet50", "scratch", 1, 64, 0.0001, [128])]


def test_repeats_run_round_robin_so_drift_spreads_over_every_configuration(write_suite):
    s = suite.load(write_suite(BASE + "overrides:\n  - match: {backbone: mobilenet_v2}\n    set: {repeats: 3}\n"))
    got = [(r.backbone, r.mode, r.repeat) for r in s.runs]
    assert got == [("mobilenet_v2", "frozen", 0), ("mobilenet_v2", "scratch", 0), ("resnet50", "frozen", 0),
                   ("resnet50", "scratch", 0), ("mobilenet_v2", "frozen", 1), ("mobilenet_v2", "scratch", 1),
                   ("mobilenet_v2", "frozen", 2), ("mobilenet_v2", "scratch", 2)]


def test_run_warns_of_records_of_other_settings_in_its_results_folder(write_suite, golden):
    from bench.cli import _foreign_records

    (golden / "suite.yaml").write_text("name: golden\n")
    s = suite.load(write_suite(BASE))
    notes = _foreign_records(golden, s, "name: t\n")
    assert notes[0] == f"{golden / 'suite.yaml'} held another suite file; it is replaced by {s.file}"
    assert notes[1].startswith(f"{golden} already holds 6 record(s) of other settings (suite golden; e.g. ")
    assert "the table shows them as separate rows. Use --results DIR" in notes[1]
    assert _foreign_records(golden, s, "name: golden\n")[0].startswith(f"{golden} already holds 6")
    assert _foreign_records(golden.parent / "empty", s, "") == []


def test_set_replaces_axes_and_beats_file_overrides(write_suite):
    path = write_suite(BASE + "overrides:\n  - match: {mode: frozen}\n    set: {epochs: 9}\n")
    s = suite.load(path, suite.parse_set(["epochs=1", "dataset=synthetic", "mode=[frozen]", "head.dense=[64]"]))
    assert [(r.dataset, r.mode, r.epochs, r.head["dense"]) for r in s.runs] == [
        ("synthetic", "frozen", 1, [64]), ("synthetic", "frozen", 1, [64])]


def test_suite_defined_dataset_with_relative_image_folder(write_suite, tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "imgs" / cls / f"{i}.png").write_bytes(b"")
    s = suite.load(write_suite(BASE.replace("dataset: fashion_mnist", "dataset: mine").replace(
        "train_size: 100", "train_size: 8").replace("val_size: 50", "val_size: 2") + """\
datasets:
  mine: {type: image_folder, path: imgs, image_size: 16}
"""))
    assert s.runs[0].dataset_params == {"type": "image_folder", "path": str(tmp_path / "imgs"), "image_size": 16,
                                        "val_fraction": 0.2}


@pytest.mark.parametrize("text, expected", [
    (BASE.replace("defaults:", "defualts:"), "suite.yaml:2: defualts: unknown key 'defualts' (did you mean 'defaults'?)"),
    (BASE.replace("epochs: 2", "epochs: two"), "suite.yaml:3: defaults.epochs: expected an integer, got 'two'"),
    (BASE.replace("epochs: 2", "epohcs: 2"), "suite.yaml:3: defaults.epohcs: unknown key 'epohcs' (did you mean 'epochs'?)"),
    (BASE.replace("[mobilenet_v2, resnet50]", "[mobilenetv2, resnet50]"),
     "suite.yaml:9: matrix.backbone[0]: unknown backbone 'mobilenetv2' (did you mean 'mobilenet_v2'?); valid: "
     "efficientnet_b0, inception_v3, mobilenet_v2, mobilenet_v2_035, resnet50, vgg16, vgg19"),
    (BASE.replace("[frozen, scratch]", "[frozen, finetune]"),
     "suite.yaml:11: matrix.mode[1]: unknown mode 'finetune'; valid: frozen, frozen-cached, scratch, unfrozen"),
    (BASE.replace("dataset: fashion_mnist", "dataset: cifar"),
     "suite.yaml:10: matrix.dataset: unknown dataset 'cifar' (did you mean 'cifar10'?)"),
    (BASE.replace("input_size: 32", "input_size: 16"),
     "suite.yaml:6: defaults.input_size: 16 is below mobilenet_v2's minimum input size 32"),
    (BASE.replace("train_size: 100", "train_size: 70000"),
     "suite.yaml:4: defaults.train_size: 70000 is more than the 60000 training images of dataset 'fashion_mnist'"),
    (BASE.replace("weights: none", "weights: torchvision"),
     "suite.yaml:7: defaults.weights: weights source 'torchvision' exists for mobilenet_v2 only, not resnet50"),
    (BASE.replace("weights: none", "weights: imagenett"),
     "suite.yaml:7: defaults.weights: unknown weights source 'imagenett' (did you mean 'imagenet'?)"),
    (BASE.replace("  epochs: 2\n", "  epochs: 2\n  epochs: 3\n"), "suite.yaml:4: defaults.epochs: key appears twice"),
    (BASE + "overrides:\n  - match: {backbone: vgg16}\n    set: {epochs: 1}\n",
     "suite.yaml:13: overrides[0].match.backbone: 'vgg16' is not in matrix.backbone"),
    (BASE.replace("name: t", "name: [t]"), "suite.yaml:1: name: required"),
    (BASE.replace("  mode: [frozen, scratch]\n", ""), "suite.yaml:8: matrix.mode: required"),
    (BASE.replace("weights: none", "head: {dense: 512}"), "suite.yaml:7: defaults.head: head.dense must be a list"),
    (BASE + "  - oops\n", "suite.yaml:12: not valid YAML"),
])
def test_bad_suites_name_file_line_key_and_valid_choices(write_suite, text, expected):
    errs = errors_of(write_suite(text))
    assert any(e.endswith(expected) or expected in e for e in errs), errs


def test_all_errors_are_reported_in_one_pass(write_suite):
    errs = errors_of(write_suite(BASE.replace("epochs: 2", "epochs: 0").replace("[frozen, scratch]", "[frozn]")))
    assert len(errs) == 2 and "must be at least 1" in errs[0] and "unknown mode 'frozn'" in errs[1]


def test_learning_rate_in_exponent_notation_is_a_number(write_suite):
    s = suite.load(write_suite(BASE.replace("  epochs: 2\n", "  epochs: 2\n  learning_rate: 1e-4\n")))
    assert s.runs[0].learning_rate == 0.0001


def test_bad_set_items_are_located_at_set(write_suite):
    errs = errors_of(write_suite(BASE), ["epoch=3", "mode=frozn"])
    assert "--set: epoch: unknown key 'epoch' (did you mean 'epochs'?)" in errs[0]
    assert errs[1].startswith("--set: mode: unknown mode 'frozn'")


def test_cli_validate_reports_errors_with_exit_2_and_no_traceback(write_suite):
    path = write_suite(BASE.replace("epochs: 2", "epochs: -1"))
    p = tlbench("validate", path)
    assert p.returncode == 2
    assert f"error: {path}:3: defaults.epochs: must be at least 1, got -1" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_validate_and_list_on_a_good_suite(write_suite):
    path = write_suite(BASE)
    p = tlbench("validate", path)
    assert p.returncode == 0 and p.stdout.strip() == f"{path}: OK, suite 't', 4 runs"
    p = tlbench("list", path)
    lines = p.stdout.splitlines()
    assert len(lines) == 4 and "resnet50-fashion_mnist-scratch-r0-" in lines[3] and "100/50 img" in lines[3]


def test_missing_suite_file_is_exit_2(tmp_path):
    p = tlbench("validate", tmp_path / "nope.yaml")
    assert p.returncode == 2 and "nope.yaml: cannot read suite file" in p.stderr


@pytest.mark.parametrize("name, runs", [("offline-default", 9), ("udacity-inception-cifar10", 3), ("smoke", 3),
                                        ("four-cases", 48), ("four-cases-mnist", 36), ("four-cases-cifar10", 36),
                                        ("recipes", 32)])
def test_shipped_suites_validate(name, runs):
    s = suite.load(ROOT / "suites" / f"{name}.yaml")
    assert s.name == name and len(s.runs) == runs


def test_published_suite_has_the_repeats_a_table_with_a_spread_needs():
    s = suite.load(ROOT / "suites" / "offline-default.yaml")
    assert [(r.mode, r.repeat) for r in s.runs[:4]] == [("frozen", 0), ("unfrozen", 0), ("scratch", 0), ("frozen", 1)]
    assert {r.repeat for r in s.runs} == {0, 1, 2}


def test_documents_suite_is_the_documents_protocol():
    s = suite.load(ROOT / "suites" / "udacity-inception-cifar10.yaml")
    for r in s.runs:
        assert (r.backbone, r.dataset, r.input_size, r.train_size, r.val_size, r.batch_size, r.epochs) == (
            "inception_v3", "cifar10", 139, 10000, 2000, 32, 5)
        assert (r.optimizer, r.learning_rate, r.loss, r.weights) == ("adam", 0.001, "categorical_crossentropy", "imagenet")
        assert r.head == {"pooling": "avg", "dense": [512], "dropout": 0.0, "activation": "relu"}
    assert [r.mode for r in s.runs] == ["frozen", "unfrozen", "scratch"]


# --- settings as matrix axes, named mode variants, cut and fine-tuning depth ----------------------

SWEEP = BASE.replace("[mobilenet_v2, resnet50]", "mobilenet_v2") + """\
  train_size: [250, 1000]
  learning_rate: [1e-3, "1e-4"]
"""


def test_any_setting_is_a_matrix_axis_with_distinct_runs(write_suite):
    s = suite.load(write_suite(SWEEP))
    got = [(r.mode, r.train_size, r.learning_rate) for r in s.runs]
    assert got == [(m, n, lr) for m in ("frozen", "scratch") for n in (250, 1000) for lr in (0.001, 0.0001)]
    assert len({r.run_id for r in s.runs}) == 8 and s.axes == ["train_size", "learning_rate"]
    assert s.describe(s.runs[1]) == "mobilenet_v2 · fashion_mnist · frozen · train_size=250 · learning_rate=0.0001"


def test_overrides_match_on_a_setting_axis_and_set_replaces_the_sweep(write_suite):
    path = write_suite(SWEEP + "overrides:\n  - match: {train_size: 250}\n    set: {epochs: 7}\n")
    assert {(r.train_size, r.epochs) for r in suite.load(path).runs} == {(250, 7), (1000, 2)}
    s = suite.load(path, suite.parse_set(["train_size=[500]", "learning_rate=0.01"]))
    assert {(r.train_size, r.learning_rate) for r in s.runs} == {(500, 0.01)} and len(s.runs) == 2


MODES = BASE.replace("[mobilenet_v2, resnet50]", "mobilenet_v2") + """\
modes:
  top-blocks: {type: unfrozen, unfreeze: last 2 blocks}
  cut-early: {type: frozen-cached, cut: early}
"""


def test_named_modes_are_strategies_of_a_base_mode(write_suite):
    s = suite.load(write_suite(MODES.replace("[frozen, scratch]", "[frozen, top-blocks, cut-early, unfrozen]")))
    got = [(r.mode, r.strategy, r.kind, r.cut, r.unfreeze, r.batchnorm) for r in s.runs]
    assert got == [("frozen", None, "frozen", None, None, None),
                   ("unfrozen", "top-blocks", "top-blocks", None, "last 2 blocks", None),
                   ("frozen-cached", "cut-early", "cut-early", "early", None, None),
                   ("unfrozen", None, "unfrozen", None, None, None)]
    assert "-top-blocks-r0-" in s.runs[1].run_id


def test_settings_equal_to_the_mode_default_keep_the_run_id(write_suite):
    plain = suite.load(write_suite(BASE)).runs
    spelled = suite.load(write_suite(BASE.replace("  weights: none\n", "  weights: none\n  batchnorm: frozen\n")
                                     + "overrides:\n  - match: {mode: scratch}\n    set: {unfreeze: all, batchnorm: train}\n",
                                     "b.yaml")).runs
    assert [r.run_id for r in spelled] == [r.run_id for r in plain]


@pytest.mark.parametrize("extra, expected", [
    ("  bad: {type: frozen, unfreeze: last 2 blocks}\n",
     "suite.yaml:14: modes.bad.unfreeze: mode 'frozen' keeps the whole backbone frozen; unfreeze: last 2 blocks needs "
     "mode unfrozen or scratch"),
    ("  bad: {type: unfrozen, unfreeze: last 17 blocks}\n",
     "modes.bad.unfreeze: mobilenet_v2 has 16 blocks, not 17: use at most 'last 16 blocks' or 'all'"),
    ("  bad: {type: unfrozen, cut: early, unfreeze: last 7 blocks}\n",
     "modes.bad.unfreeze: mobilenet_v2 cut at early has 6 blocks, not 7"),
    ("  bad: {type: unfrozen, unfreeze: from block_6_expnd}\n",
     "modes.bad.unfreeze: mobilenet_v2 has no layer 'block_6_expnd' (did you mean 'block_6_expand'"),
    ("  bad: {type: frozen, cut: block_6_expand_rel}\n",
     "modes.bad.cut: mobilenet_v2 has no layer 'block_6_expand_rel' (did you mean 'block_6_expand_relu'"),
    ("  bad: {type: unfrozen, unfreeze: first 3 blocks}\n",
     "modes.bad.unfreeze: expected none, all, 'last N blocks' or 'from LAYER', got 'first 3 blocks'"),
    ("  bad: {type: frozen, batchnorm: train}\n",
     "modes.bad.batchnorm: batchnorm: train has no effect when no backbone layer trains"),
    ("  bad: {type: unfrozen, batchnorm: trained}\n",
     "modes.bad.batchnorm: unknown batchnorm policy 'trained' (did you mean 'train'?); valid: frozen, train"),
    ("  bad: {type: finetune}\n", "modes.bad.type: unknown mode 'finetune'"),
    ("  frozen: {type: frozen, cut: early}\n", "modes.frozen: 'frozen' is a built-in mode"),
    ("  bad: {type: frozen, train_size: 250}\n",
     "modes.bad.train_size: 'train_size' is also a matrix axis: the mode would undo the sweep"),
    ("  bad: {type: frozen, cut: null}\n", "matrix: two matrix entries give the same run"),
])
def test_bad_strategies_name_the_key_and_the_real_layers(write_suite, extra, expected):
    text = (SWEEP.replace("  learning_rate: [1e-3, \"1e-4\"]\n", "").replace("[frozen, scratch]", "[frozen, bad]")
            + "modes:\n" + extra)
    if "  frozen: " in extra:
        text = text.replace("[frozen, bad]", "[frozen]")
    errs = errors_of(write_suite(text))
    assert any(expected in e for e in errs), errs


def test_every_backbone_preset_names_a_real_layer_and_its_blocks_are_found():
    from bench import finetune
    from bench.backbones import BACKBONES

    expected_blocks = {"mobilenet_v2": 16, "mobilenet_v2_035": 16, "inception_v3": 11, "resnet50": 16, "vgg16": 5,
                       "vgg19": 5, "efficientnet_b0": 16}
    for name in BACKBONES.names():
        b = BACKBONES.get(name)
        names = list(finetune.layer_names(name, max(b.min_size, 75)))
        assert set(b.cuts) == {"early", "middle", "late"}
        order = [names.index(b.cuts[k]) for k in ("early", "middle", "late")]  # raises if a preset is not a layer
        assert order == sorted(order), name
        assert len(finetune.block_starts(names, b.blocks)) == expected_blocks[name], name
