"""How close to the limit tlbench measures, as ratios taken in one process on one machine.

  (a) harness overhead: tlbench's epoch (runner.run_one) vs a minimal hand-written Keras fit of
      the same model on the same data;
  (b) input path: tlbench's (uint8 batches gathered by index; resize and normalisation inside the
      model) vs the documents' (each image resized and preprocessed in Python on the CPU,
      ImageDataGenerator / imresize style, float32 batches into the model);
  (c) frozen-cached vs frozen, per epoch, and the one-off extraction it pays first;
  (d) achieved GFLOP/s per mode, from flops.count on the Keras model itself (training ~3x forward).

The compared variants run in rotated order in every round, and each figure is a median over
rounds: on a shared VM one process's steps can run 2x slower than another's, and drifts within a
process hit all variants alike. Weights are random ('none'): a step costs the same with ImageNet
weights, and the benchmark stays offline.

  .venv/bin/python benchmarks/overhead.py [--quick] [--backbone mobilenet_v2] [--input-size 96] [--out FILE]

--out writes what was printed, with the command, the date and the machine, to a JSON file
(benchmarks/results/overhead.json is the one the README's Performance section quotes).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench import datasets, flops, gpucheck, inputs, runner, suite  # noqa: E402
from bench import model as model_lib  # noqa: E402
from bench.backbones import BACKBONES  # noqa: E402
from bench.environment import capture, hardware_label  # noqa: E402
from bench.preprocessing import PRESETS  # noqa: E402
from bench.weights import preprocessing  # noqa: E402

SIZES = {  # train, val images; rounds; epochs per run (epoch 1 compiles, the rest are steady)
    "quick": dict(train=512, val=128, rounds=3, epochs=3, trainable_epochs=3),
    "full": dict(train=2048, val=512, rounds=4, epochs=4, trainable_epochs=3),
}


def configs(args, size: dict) -> dict:
    text = (f"name: overhead\ndefaults: {{input_size: {args.input_size}, batch_size: {args.batch_size}, "
            f"weights: none, epochs: {size['epochs']}, precision: {args.precision}}}\n"
            f"datasets: {{images: {{type: synthetic, image_size: 28, classes: 10, train: {size['train']}, "
            f"test: {size['val']}}}}}\n"
            f"matrix: {{backbone: {args.backbone}, dataset: images, "
            f"mode: [frozen, frozen-cached, unfrozen, scratch]}}\n")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "s.yaml").write_text(text)
        return {c.mode: c for c in suite.load(Path(tmp) / "s.yaml").runs}


def steady(seconds: list[float]) -> float:
    return statistics.median(seconds[1:])


class EpochTimes(keras.callbacks.Callback):
    """The least a hand-written fit needs to know its epoch times."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


# --- the variants: each returns the epoch seconds of one run -------------------------------------

RECORDS: list[dict] = []  # tlbench's records, for what they say besides epoch times


def tlbench(config) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):  # verbose=2, as in logs and CI: a line per epoch
        record = runner.run_one(config, environment={}, verbose=2)
    if record["status"] != "ok":
        raise SystemExit(f"tlbench run failed: {record['error']}\n{record.get('traceback', '')}")
    RECORDS.append(record)
    return [e["epoch_seconds"] for e in record["epochs"]]


def hand_written(config, data, tlbench_inputs: bool = False) -> list[float]:
    """model.fit on the arrays, as anyone writes it; or on tlbench's input pipeline (bench/inputs.py)."""
    keras.utils.set_random_seed(0)
    model = model_lib.build(config, data.x_train.shape[1:], data.classes)
    model_lib.compile(model, config)
    y, y_val = (keras.utils.to_categorical(v, data.classes) for v in (data.y_train, data.y_val))
    if tlbench_inputs:
        fit_args, _ = inputs.fit_arguments(data.x_train, y, data.x_val, y_val, config.batch_size)
    else:
        fit_args = dict(x=data.x_train, y=y, batch_size=config.batch_size, validation_data=(data.x_val, y_val))
    times = EpochTimes()
    model.fit(epochs=config.epochs, callbacks=[times], verbose=0, **fit_args)
    keras.backend.clear_session()
    return times.seconds


class DocumentsPipeline(keras.utils.PyDataset):
    """ImageDataGenerator.flow(x, y) with preprocess_input and a per-image resize (scipy's imresize):
    every image resized and preprocessed in Python, float32 batches out. One worker, like Keras 2's
    fit_generator default; tf.data still prefetches it in the background under TensorFlow."""

    def __init__(self, x, y, classes, batch_size, size, preset, seed=0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y = x, keras.utils.to_categorical(y, classes)
        self.batch_size, self.size = batch_size, size
        scale, offset, self.bgr = PRESETS[preset]
        self.scale, self.offset = np.float32(scale), np.float32(offset)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def image(self, i):
        from PIL import Image

        img = np.asarray(Image.fromarray(self.x[i]).resize((self.size, self.size), Image.BILINEAR), np.float32)
        return (img[..., ::-1] if self.bgr else img) * self.scale + self.offset

    def __getitem__(self, b):
        idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]
        return np.stack([self.image(i) for i in idx]), self.y[idx]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def documents_model(config, classes) -> keras.Model:
    """tlbench's model minus its resize and normalise layers: it takes the pipeline's float32 images."""
    s = config.input_size
    full = model_lib.build(config, (s, s, 3), classes)
    inputs = keras.Input((s, s, 3), name="preprocessed")
    names = [layer.name for layer in full.layers]
    x = inputs
    for layer in full.layers[names.index("normalize") + 1:]:
        x = layer(x)  # a frozen backbone (trainable=False) keeps BatchNorm in inference mode
    return keras.Model(inputs, x)


def documents(config, data) -> list[float]:
    keras.utils.set_random_seed(0)
    model = documents_model(config, data.classes)
    model_lib.compile(model, config)
    preset = preprocessing(BACKBONES.get(config.backbone), config.weights)

    def pipe(x, y):
        return DocumentsPipeline(x, y, data.classes, config.batch_size, config.input_size, preset)

    times = EpochTimes()
    model.fit(pipe(data.x_train, data.y_train), epochs=config.epochs, validation_data=pipe(data.x_val, data.y_val),
              callbacks=[times], verbose=0)
    keras.backend.clear_session()
    return times.seconds


def pipeline_rates(config, data) -> dict:
    """Images per second each input path delivers on its own, with no model to feed."""
    bs, n = config.batch_size, len(data.x_train)
    order = np.random.default_rng(0).permutation(n)
    t = time.perf_counter()
    for b in range(0, n, bs):  # what every backend's array adapter does per batch: one gather
        data.x_train[order[b:b + bs]]
    ours = n / (time.perf_counter() - t)
    preset = preprocessing(BACKBONES.get(config.backbone), config.weights)
    pipe = DocumentsPipeline(data.x_train, data.y_train, data.classes, bs, config.input_size, preset)
    t = time.perf_counter()
    for b in range(len(pipe)):
        pipe[b]
    return {"tlbench": ours, "documents": n / (time.perf_counter() - t)}


def matmul_ceiling() -> float:
    """GFLOP/s of a large float32 matmul under the Keras backend: what this machine sustains in practice."""
    n = 2048
    a = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n), np.float32))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def flop_counts(cs: dict, data) -> dict:
    out = {}
    for mode, c in cs.items():
        if mode == "frozen-cached":
            trunk = model_lib.feature_extractor(c, data.x_train.shape[1:])
            model = model_lib.build_head(c, trunk.output.shape[1:], data.classes)
        else:
            model = model_lib.build(c, data.x_train.shape[1:], data.classes)
        out[mode] = flops.count(model)
        keras.backend.clear_session()
    return out


# --- report ------------------------------------------------------------------------------------------

def fmt(xs):
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


def measure(variants: dict, rounds: int) -> dict:
    """Every variant once per round, the order rotated each round; epoch seconds per variant per round."""
    epochs = {k: [] for k in variants}
    for r in range(rounds):
        names = list(variants)
        for name in names[r % len(names):] + names[:r % len(names)]:
            epochs[name].append(variants[name]())
        print(f"round {r + 1}: " + ", ".join(f"{k} {steady(epochs[k][-1]):.3f} s" for k in variants), flush=True)
    return epochs


class Summary:
    def __init__(self, epochs: dict):
        self.epochs = epochs

    def med(self, k) -> float:
        return statistics.median(steady(x) for x in self.epochs[k])

    def ratio(self, a, b) -> tuple[float, list[float]]:
        per_round = [steady(x) / steady(y) for x, y in zip(self.epochs[a], self.epochs[b])]
        return statistics.median(per_round), per_round

    def raw(self, *names):
        for k in names:
            print(f"    raw {k}: " + " ".join(fmt(x) for x in self.epochs[k]))


def report_overhead(s: Summary):
    print("\n(a) harness overhead: tlbench run_one vs a minimal hand-written fit, steady s/epoch (train + val)")
    rat, per = s.ratio("tlbench", "hand-inputs")
    print(f"    same input pipeline: tlbench {s.med('tlbench'):.3f} s, hand-written {s.med('hand-inputs'):.3f} s -> "
          f"ratio {rat:.3f} (per round {fmt(per)}; target <= 1.03): the harness's own cost")
    rat, per = s.ratio("tlbench", "hand")
    print(f"    fit on the NumPy arrays: hand-written {s.med('hand'):.3f} s -> ratio {rat:.3f} (per round {fmt(per)}): "
          f"tlbench's input pipeline included")
    s.raw("tlbench", "hand-inputs", "hand")


def report_input_path(s: Summary, rates: dict, train_images: int):
    print("\n(b) input path: documents' per-image Python resize + preprocess vs tlbench's in-model, s/epoch")
    rat, per = s.ratio("documents", "tlbench")
    print(f"    documents {s.med('documents'):.3f} s, tlbench {s.med('tlbench'):.3f} s -> tlbench {rat:.2f}x faster "
          f"(per round {fmt(per)})")
    print(f"    the input path alone, no model: tlbench {rates['tlbench']:,.0f} images/s, documents "
          f"{rates['documents']:,.0f} images/s ({rates['tlbench'] / rates['documents']:,.0f}x)")
    print(f"    the model consumes ~{train_images / s.med('tlbench'):,.0f} images/s here: an accelerator that steps "
          f"faster than {rates['documents']:,.0f} images/s waits on the documents' pipeline")
    print(f"    (the documents' pipeline runs in tf.data's background thread here, so on a CPU-bound model it costs "
          f"{s.med('documents') / s.med('hand'):.2f}x the hand-written fit on arrays; the rest of the gap to tlbench "
          f"is the iterator teardown that bench/inputs.py avoids)")
    s.raw("documents")


def report_cached(s: Summary, extraction: float | None):
    print("\n(c) frozen-cached vs frozen, steady s/epoch (cached: the head alone on stored features)")
    rat, per = s.ratio("tlbench", "cached")
    print(f"    frozen {s.med('tlbench'):.3f} s, frozen-cached {s.med('cached'):.3f} s -> {rat:.1f}x faster per epoch "
          f"(per round {fmt(per)})")
    if extraction is not None:
        print(f"    one-off extraction {extraction:.2f} s (train + val, tracing included); pays for itself after "
              f"{extraction / (s.med('tlbench') - s.med('cached')):.1f} epochs; later runs of the same features hit "
              f"the cache")
    s.raw("cached")


def report_flops(seconds: dict, counts: dict, size: dict, device: str, precision: str):
    print("\n(d) achieved GFLOP/s per mode (steady epochs; training = 3x forward for trainable layers)")
    ceiling = matmul_ceiling()
    peak = gpucheck.peak(device, precision)
    known = f"{peak[0] * 1e3:,.0f} GFLOP/s ({peak[1]})" if peak else "unknown (a CPU does not report its clock and vector units)"
    print(f"    machine peak: {known}; measured float32 matmul ceiling {ceiling:.0f} GFLOP/s")
    for mode, sec in seconds.items():
        c = counts[mode]
        work = flops.epoch_flops(c, size["train"], size["val"])
        print(f"    {mode:13s} {c.forward / 1e9:7.3f} GFLOP/image forward, {c.train / 1e9:7.3f} training; "
              f"{work / 1e12:6.3f} TFLOP/epoch in {sec:7.3f} s = {work / sec / 1e9:6.1f} GFLOP/s "
              f"({100 * work / sec / 1e9 / ceiling:.0f}% of the matmul ceiling"
              + (f", {100 * work / sec / 1e12 / peak:.1f}% of peak)" if peak else ")"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="about 2 minutes on 2 CPU cores (full: about 6)")
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="float32")
    p.add_argument("--out", help="also write the output, command, date and machine to this JSON file")
    args = p.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    cache = tempfile.mkdtemp(prefix="tlbench-overhead-")  # a cold feature cache, then hits
    os.environ["TLBENCH_CACHE"] = cache
    started = time.perf_counter()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
            run(args, size)
            print(f"\n{time.perf_counter() - started:.0f} s in all")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if args.out:
        env = capture()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "command": "python benchmarks/overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": hardware_label(env), "versions": env["versions"], "git": env["git"],
            "output": printed.getvalue().splitlines()}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


class _Tee(io.TextIOBase):
    """stdout that is also kept, for --out."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run(args, size: dict) -> None:
    cs = configs(args, size)
    fz = cs["frozen"]
    data = datasets.load("synthetic", fz.dataset_params, None, None, fz.seed)
    env = capture()
    print(f"tlbench overhead benchmark ({'quick' if args.quick else 'full'}): {env['device']} ({os.cpu_count()} "
          f"cores) · Keras {keras.__version__} · backend {keras.backend.backend()}")
    print(f"{fz.backbone} @ {fz.input_size} px from 28 px uint8 images, {size['train']} train / {size['val']} val, "
          f"batch {fz.batch_size}, {fz.precision}, jit_compile {fz.jit_compile}; {size['rounds']} rounds x "
          f"{size['epochs']} epochs (epoch 1 compiles; steady = epochs 2+)\n", flush=True)

    s = Summary(measure({"tlbench": lambda: tlbench(fz), "hand": lambda: hand_written(fz, data),
                         "hand-inputs": lambda: hand_written(fz, data, tlbench_inputs=True),
                         "documents": lambda: documents(fz, data), "cached": lambda: tlbench(cs["frozen-cached"])},
                        size["rounds"]))
    frozen = next(r for r in RECORDS if r["config"]["mode"] == "frozen")
    print(f"XLA: requested {fz.jit_compile}, resolved {frozen['xla']['resolved']}; "
          f"input pipeline: {frozen['execution']['pipeline']}")
    report_overhead(s)
    report_input_path(s, pipeline_rates(fz, data), size["train"])
    misses = [r["features"]["extract_seconds"] for r in RECORDS if r.get("features", {}).get("cache_hit") is False]
    report_cached(s, misses[0] if misses else None)

    seconds = {"frozen": s.med("tlbench"), "frozen-cached": s.med("cached")}
    for mode in ("unfrozen", "scratch"):
        seconds[mode] = steady(tlbench(dataclasses.replace(cs[mode], epochs=size["trainable_epochs"])))
    report_flops(seconds, flop_counts(cs, data), size, env["device"], fz.precision)
    for r in RECORDS[-2:]:
        print(f"    raw {r['config']['mode']}: " + fmt([e["epoch_seconds"] for e in r["epochs"]]))


if __name__ == "__main__":
    sys.exit(main())
