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

How long the training loop waits on this pipeline cannot be read from outside without slowing it: under
TensorFlow the batch is taken inside the compiled train function, and under JAX a per-batch callback
would turn off Keras's asynchronous dispatch. So `wait_bound` times the pipeline alone after training:
one epoch of the run's own training batches (PIPELINE_MEANS says what the number is).
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np

PIPELINE_MEANS = ("seconds to draw one epoch of training batches from the run's own input pipeline, alone, after "
                  "training (a second pass: the first builds the iterator, as epoch 1 did): the most the training "
                  "loop can wait on input per epoch, since TensorFlow prefetches on a thread of its own and JAX "
                  "gathers while the previous step runs, unless the pipeline is slowed by sharing the CPUs with "
                  "training")


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


def wait_bound(fit_args: dict, steps: int) -> dict:
    """The record's `input_pipeline`: PIPELINE_MEANS, for the batches of `fit_args` (fit_arguments' own)."""
    batches = _training_batches(fit_args)
    seconds = []
    for _ in range(2):
        t = time.perf_counter()
        for _ in range(steps):
            next(batches)
        seconds.append(time.perf_counter() - t)
    return {"seconds_per_epoch": seconds[1], "first_pass_seconds": seconds[0], "steps": steps,
            "means": PIPELINE_MEANS}


def _training_batches(fit_args: dict):
    """An endless iterator over the training batches, built as fit builds it under this backend."""
    if keras.backend.backend() == "tensorflow":
        return iter(fit_args["x"].repeat())
    # Keras's own adapter for arrays, the one fit uses (JAX: its jax iterator; others: the NumPy one).
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    def epochs():
        while True:
            adapter = ArrayDataAdapter(fit_args["x"], fit_args["y"], batch_size=fit_args["batch_size"], shuffle=True)
            yield from (adapter.get_jax_iterator() if keras.backend.backend() == "jax"
                        else adapter.get_numpy_iterator())
    return epochs()
