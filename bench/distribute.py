"""Data parallel within a run (`devices: N | all`): which devices train it, and the scope that spreads it over them.

The global batch is `batch_size`: each of N devices takes batch_size / N images of every step, and the
gradients are averaged over all of them, so a run on N devices takes the same steps as on one.

  jax         keras.distribution.DataParallel over the first N of jax.devices(), set for the run and reset
              after it (it is global: the suite's next run must not inherit it). Keras shards each input
              batch over the devices (its data distribution) and replicates the variables on all of them.
  tensorflow  tf.distribute.MirroredStrategy over the first N logical GPUs (CPUs where there is none); the
              model is built and compiled in its scope, and Keras distributes the tf.data pipeline itself.

The clock's device sync waits for every device: JAX blocks on the replicated state variables, whose buffers
are on all of them; TensorFlow reads the metrics after each step, which waits for every replica's step.

How many devices a backend sees is known only once it is imported, so a run asking for more than there are
fails at run time with a record that says so; validation (crosscheck) refuses what it can tell earlier.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import UserError

BACKENDS = ("tensorflow", "jax")  # torch: Keras has no data-parallel distribution for it
SINGLE = "single"


def parse(v) -> int | None:
    """The suite value: a positive integer or "all"; 1 is stored as None, the one device every run had before
    this setting existed, so a one-device run keeps its id however it was written."""
    if v == "all":
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"expected a positive integer or 'all', got {v!r}")
    return None if v == 1 else v


def count(value) -> int | None:
    """The device count a setting asks for; None for "all" (known only at run time)."""
    return None if value == "all" else (value or 1)


@dataclass
class Placement:
    backend: str
    names: list[str]
    strategy: str
    handle: object = field(default=None, repr=False)  # the DataParallel or MirroredStrategy; None for one device

    def record(self) -> dict:
        """The record's `devices`: how many, which, and how the run spread over them."""
        return {"count": len(self.names), "list": self.names, "strategy": self.strategy}

    def check_batches(self, batch_size: int, sizes: dict[str, int]) -> None:
        """Every batch must split evenly over the devices: the batch size, and under JAX, whose sharding cannot
        split unevenly, the short last batch of each split too."""
        n = len(self.names)
        if n == 1:
            return
        if batch_size % n:
            raise UserError(f"batch_size {batch_size} does not divide over {n} devices (devices: {n}): the global "
                            f"batch is split evenly, so use a multiple of {n}")
        if self.backend != "jax":
            return
        for key, images in sizes.items():
            if images % batch_size % n:
                raise UserError(f"{key} {images} leaves a last batch of {images % batch_size} images, which JAX "
                                f"cannot split over {n} devices: use a {key} whose remainder by batch_size "
                                f"{batch_size} is a multiple of {n}")

    @contextmanager
    def scope(self):
        """Build, compile and train inside this: the model's variables and steps are spread over the devices."""
        if self.strategy == SINGLE:
            yield
        elif self.backend == "jax":
            import keras

            keras.distribution.set_distribution(self.handle)
            try:
                yield
            finally:
                keras.distribution.set_distribution(None)
        else:
            with self.handle.scope():
                yield


@contextmanager
def spread(devices, batch_size: int, train_images: int, val_images: int):
    """The run's devices placed and checked; yields the record's `devices` while the run is spread over them."""
    import keras

    placement = place(devices, keras.backend.backend())
    placement.check_batches(batch_size, {"train_size": train_images, "val_size": val_images})
    with placement.scope():
        yield placement.record()


def place(devices, backend: str) -> Placement:
    """The devices a run with setting `devices` trains on under `backend` (UserError: fewer than asked for)."""
    if backend not in BACKENDS:
        raise UserError(f"devices: data parallel runs on backend {' or '.join(BACKENDS)}, not {backend}")
    found = _found(backend)
    n = len(found) if devices == "all" else count(devices)
    if n > len(found):
        raise UserError(f"devices: {devices} asks for {n} devices, but {backend} sees {len(found)} here: "
                        f"{', '.join(name for name, _ in found)}")
    chosen = found[:n]
    names = [name for name, _ in chosen]
    if n == 1:
        return Placement(backend, names, SINGLE)
    if backend == "jax":
        import keras

        return Placement(backend, names, "jax DataParallel",
                         keras.distribution.DataParallel(devices=[device for _, device in chosen]))
    import tensorflow as tf

    return Placement(backend, names, "tf MirroredStrategy", tf.distribute.MirroredStrategy(names))


def _found(backend: str) -> list[tuple[str, object]]:
    """(name, device) of every device a run could use: the accelerators, or the CPUs where there is none."""
    if backend == "jax":
        import jax

        return [(f"{d.platform}:{d.id}", d) for d in jax.devices()]
    import tensorflow as tf

    logical = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [(d.name, d.name) for d in logical]
