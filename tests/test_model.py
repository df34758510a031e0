"""Registries, input normalisation and the model each mode builds (tiny inputs, no training)."""
import keras
import numpy as np
import pytest

from bench import model as model_lib
from bench import suite
from bench.backbones import BACKBONES
from bench.modes import MODES
from bench.preprocessing import Normalize
from bench.registry import UnknownName

TINY = """\
name: t
defaults: {input_size: 32, weights: none, train_size: 8, val_size: 8, head: {dense: [16]}}
matrix: {backbone: mobilenet_v2_035, dataset: synthetic, mode: [frozen, unfrozen, scratch]}
"""


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownName, match="unknown mode 'frozn' \\(did you mean 'frozen'\\?\\); valid: frozen, frozen-cached, scratch, unfrozen"):
        MODES.get("frozn")
    assert BACKBONES.names() == ["efficientnet_b0", "inception_v3", "mobilenet_v2", "mobilenet_v2_035", "resnet50",
                                 "vgg16", "vgg19"]


@pytest.mark.parametrize("preset, reference", [
    ("inception", keras.applications.inception_v3.preprocess_input),
    ("caffe", keras.applications.vgg16.preprocess_input),
    ("caffe", keras.applications.resnet50.preprocess_input),
])
def test_normalize_matches_keras_preprocess_input(preset, reference):
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("uint8")
    got = keras.ops.convert_to_numpy(Normalize(preset)(x))
    np.testing.assert_allclose(got, reference(x.astype("float32")), rtol=1e-5, atol=1e-4)


def test_torch_normalisation():
    x = np.full((1, 1, 1, 3), 255, "uint8")
    got = keras.ops.convert_to_numpy(Normalize("torch")(x)).ravel()
    np.testing.assert_allclose(got, (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_at_its_minimum_size(name):
    b = BACKBONES.get(name)
    m = b.build(b.min_size, weights=None)
    assert m.output.shape[-1] > 0 and len(m.output.shape) == 4
    keras.backend.clear_session()


def _runs(write_suite):
    return {r.mode: r for r in suite.load(write_suite(TINY)).runs}


def test_frozen_trains_only_the_head_with_batchnorm_in_inference(write_suite):
    r = _runs(write_suite)["frozen"]
    m = model_lib.build(r, (32, 32, 3), 4)
    counts = model_lib.parameter_counts(m)
    # head only: GAP(1280) -> Dense 16 -> Dense 4
    assert counts["trainable"] == 1280 * 16 + 16 + 16 * 4 + 4
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    # BatchNorm in inference mode: the forward pass is the same whether fit() says training or not
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m(x, training=True)),
                               keras.ops.convert_to_numpy(m(x, training=False)), rtol=1e-5, atol=1e-6)


def test_unfrozen_and_scratch_train_everything(write_suite):
    runs = _runs(write_suite)
    for mode in ("unfrozen", "scratch"):
        m = model_lib.build(runs[mode], (16, 16, 3), 4)
        counts = model_lib.parameter_counts(m)
        assert counts["trainable"] > 300_000  # the whole 0.35 MobileNetV2 plus head
        assert counts["non_trainable"] == sum(int(np.prod(w.shape)) for w in m.non_trainable_weights)
        assert m.get_layer("resize").output.shape[1:3] == (32, 32)  # 16 px images resized in the model


def test_a_cut_network_has_the_flops_parameters_and_features_of_its_layers(write_suite):
    from bench import flops

    text = TINY.replace("mode: [frozen, unfrozen, scratch]", "mode: [frozen, cut-middle]") + \
        "modes:\n  cut-middle: {type: unfrozen, cut: middle}\n"
    runs = {r.kind: r for r in suite.load(write_suite(text)).runs}
    whole, cut = (model_lib.build(runs[k], (32, 32, 3), 4) for k in ("frozen", "cut-middle"))
    backbone = next(layer for layer in cut.layers if isinstance(layer, keras.Model))
    assert backbone.layers[-1].name == "block_13_expand_relu"
    assert cut.get_layer("pool").output.shape[-1] == 192  # 0.35 MobileNetV2 there: 6 x 32 channels
    c, w = flops.count(cut), flops.count(whole)
    assert 0 < c.forward < w.forward
    # everything in the cut network trains (3x), nothing of the frozen backbone does (1x)
    assert c.train == 3 * c.forward and w.train < 1.1 * w.forward
    assert model_lib.parameter_counts(cut)["trainable"] < model_lib.parameter_counts(whole)["non_trainable"]
