"""How fit gets its batches: arrays in memory, a batch gathered by a shuffled index, no per-image work.

Keras 3 already does this for NumPy arrays under every backend: TensorFlow gathers each batch in
tf.data and prefetches it; JAX gathers in NumPy while the previous step runs (async dispatch; on an
accelerator Keras also puts the next batch on the device one step ahead); torch batches indices
through a DataLoader. Measured (benchmarks/overhead.py), the gather delivers 200,000-500,000 images
a second on one CPU core; under JAX on the CPU it was 0.4 ms of a 6 s epoch, with no stalls between
epochs. So JAX and torch (not measured: not installed there) get the arrays as they are.

One cost is measured under TensorFlow and avoided: Keras makes a new tf.data iterator for every
epoch and every validation pass, and destroying an iterator that owns background threads (prefetch,
autotuning) now and then blocks for about half a second with the CPUs idle, while tf.data winds
its threads down. On the 2-core development machine that was +0.55 s on a 0.7 s frozen epoch, in
about every second epoch. So the training set becomes one endless, prefetching pipeline that lives
for the whole fit (steps_per_epoch marks the epochs), and validation a pipeline with no thread of
its own, whose teardown is free. Each epoch is still one pass over a fresh permutation.
"""
from __future__ import annotations

import math

import keras
import numpy as np


def fit_arguments(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, batch_size: int,
                  steps_per_execution: int = 1) -> tuple[dict, str]:
    """Keyword arguments for model.fit, and a line for the record saying what they are."""
    if keras.backend.backend() != "tensorflow":
        return (dict(x=x, y=y, batch_size=batch_size, validation_data=(x_val, y_val), shuffle=True),
                "Keras array adapter (gather per batch)")
    steps = math.ceil(len(x) / batch_size)
    # With several steps per execution, an endless iterator would let an epoch's last execution run
    # on into the next epoch's batches: then the training set is a fresh thread-free pipeline per epoch.
    endless = steps % steps_per_execution == 0
    # shuffle=False: the dataset reshuffles itself every epoch; fit's own flag would only warn.
    args = dict(x=_tf_batches(x, y, batch_size, shuffle=True, endless=endless),
                validation_data=_tf_batches(x_val, y_val, batch_size, shuffle=False, endless=False), shuffle=False)
    if endless:
        args["steps_per_epoch"] = steps
    return args, ("tf.data gather, one prefetching iterator for the whole fit" if endless
                  else "tf.data gather, a thread-free iterator per epoch")


def _tf_batches(x, y, batch_size: int, shuffle: bool, endless: bool):
    import tensorflow as tf

    index = tf.data.Dataset.range(len(x))
    if shuffle:
        index = index.shuffle(len(x), reshuffle_each_iteration=True)
    index = index.batch(batch_size)
    if endless:
        index = index.repeat()
    # The arrays enter as one dataset element, as Keras's own adapter does, not as graph constants.
    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
    batches = tf.data.Dataset.zip((index, arrays)).map(lambda i, xy: (tf.gather(xy[0], i), tf.gather(xy[1], i)))
    options = tf.data.Options()
    options.autotune.enabled = False  # its model thread is one more thread to wind down
    options.experimental_optimization.apply_default_optimizations = False
    if endless:
        batches = batches.prefetch(2)  # the next batch is gathered while this one trains
    return batches.with_options(options)
