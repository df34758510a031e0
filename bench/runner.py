"""Run a suite: each RunConfig trained with Keras fit, timed, and written as a record."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import console, datasets, interrupt, progress, recipes, store
from .config import RunConfig
from .errors import UserError
from .identity import changes, key_parts, run_key
from .interrupt import Interrupted
from .modes import MODES
from .suite import Suite


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_one(config: RunConfig, environment: dict, verbose: int = 2, callbacks: tuple = ()) -> dict:
    """Train one run and return its record; a failure is recorded, not raised. `callbacks` follow the clock
    in fit, so their epoch hooks run outside the timed spans."""
    from contextlib import ExitStack

    import keras

    from . import distribute, features, flops, gpu, inputs, load
    from . import model as model_lib
    from .clock import EpochClock, measurement
    from .memory import Peak
    from .weights import identity

    record = {"schema": store.SCHEMA, "run_id": config.run_id, "suite": config.suite,
              "config": config.to_dict(), "started": now(), "status": "running", "error": None,
              "environment": environment, "weights": identity(config.weights), "recipe": recipes.describe(config),
              "epochs": []}
    clock = None
    machine, gpus = load.snapshot(), gpu.read()
    memory = Peak().start()
    spread = ExitStack()  # closed in `finally`: the suite's next run must not inherit this one's devices
    try:
        keras.utils.set_random_seed(config.seed + config.repeat)
        t = time.perf_counter()
        data = datasets.load(config.dataset_params["type"], config.dataset_params, config.train_size,
                             config.val_size, config.seed)
        record["data_seconds"] = time.perf_counter() - t
        record["data"] = {"source": data.source, "fingerprint": data.fingerprint(), "classes": data.classes,
                          "train_images": len(data.x_train), "val_images": len(data.x_val),
                          "image_shape": list(data.x_train.shape[1:])}

        mode = MODES.get(config.mode)
        x_train, x_val = data.x_train, data.x_val
        if mode.cached_features:  # extraction is timed apart: the epochs then time the head alone
            cached = features.obtain(config, data, record["data"]["fingerprint"])
            record["features"] = cached.info
            x_train, x_val = cached.x_train, cached.x_val
            # Re-seeded so that the head starts and shuffles the same whether the cache hit or the
            # extraction (building the backbone) drew random numbers.
            keras.utils.set_random_seed(config.seed + config.repeat)

        if config.devices:  # data parallel: built, compiled and trained spread over the devices
            record["devices"] = spread.enter_context(distribute.spread(config.devices, config.batch_size,
                                                                       len(x_train), len(x_val)))
        t = time.perf_counter()
        build = model_lib.build_head if mode.cached_features else model_lib.build
        model = build(config, x_train.shape[1:], data.classes)
        stages = recipes.stages(config)
        steps = -(-len(x_train) // config.batch_size)
        if len(stages) > 1:  # build set the run's own trainability; a head stage first freezes the backbone
            model_lib.enter_stage(model, config, stages[0])
        model_lib.compile(model, config, stages[0], steps)
        record["build_seconds"] = time.perf_counter() - t
        record["precision"] = keras.config.dtype_policy().name
        record["xla"] = {"requested": config.jit_compile, "resolved": bool(model.jit_compile)}

        y_train, y_val = data.y_train, data.y_val
        if config.loss == "categorical_crossentropy":
            y_train = keras.utils.to_categorical(y_train, data.classes)
            y_val = keras.utils.to_categorical(y_val, data.classes)
        fit_args, pipeline = inputs.fit_arguments(x_train, y_train, x_val, y_val, config.batch_size,
                                                  int(model.steps_per_execution))
        # What the clock's seconds include: the device sync before each reading, Keras's own per-step
        # host sync (TensorFlow), the steps per execution and the progress output.
        record["execution"] = {"batch_size": config.batch_size, "steps_per_execution": int(model.steps_per_execution),
                               "train_steps_per_epoch": steps,
                               "inputs": "cached features" if mode.cached_features else "uint8 images",
                               "pipeline": pipeline, "verbose": verbose,
                               **measurement(keras.backend.backend())}
        clock = EpochClock(len(x_train), stop_requested=interrupt.requested)
        for stage in stages:
            if stage.number > 1:  # what trains changes, so Keras compiles again: its first epoch is not steady
                model_lib.enter_stage(model, config, stage)
                model_lib.compile(model, config, stage, steps)
            record["params"] = model_lib.parameter_counts(model)  # the last stage's stands for the run
            record["flops"] = vars(flops.count(model))  # per image; of the head alone on cached features
            record["recipe"]["stages"][stage.number - 1]["trainable_params"] = record["params"]["trainable"]
            clock.stage = stage.number
            with interrupt.stoppable(model):
                model.fit(initial_epoch=stage.first_epoch - 1, epochs=stage.last_epoch,
                          callbacks=[clock, *callbacks], verbose=verbose, **fit_args)
            if clock.diverged:
                break
        record["status"] = "diverged" if clock.diverged else "ok"
        if clock.diverged:
            record["error"] = "training loss became NaN or infinite"
        else:  # after the timed epochs, so their seconds stay comparable with records measured without these
            record["batchnorm_check"] = model_lib.batchnorm_check(model, x_val, data.y_val, config.batch_size)
            record["input_pipeline"] = inputs.wait_bound(fit_args, steps)
    except Exception as e:  # noqa: BLE001 -- one broken run must not cost the rest of the suite
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, UserError):
            record["traceback"] = traceback.format_exc(limit=-8)
    finally:
        if clock is not None:
            record["epochs"] = clock.rows
        spread.close()
        memory.stop()
        record["memory"] = memory.record()
        record["load"] = load.during(machine, load.snapshot())
        if gpus:
            record["gpu"] = gpu.during(gpus, gpu.read())
        record["finished"] = now()
        keras.backend.clear_session()  # free the model before the next run builds its own
    return record


def recorded(folder: Path, config: RunConfig, out: Callable[[str], None], prefix: str) -> dict | None:
    """This run's record: under its file name, or under the name an older tlbench gave the same config
    (fields added since get their defaults), so an old record is superseded, never left beside the new one.
    A corrupt one counts as none: it is moved to damaged/ (kept, with why) and the run measured again."""
    try:
        record = store.read_record(store.run_path(folder, config.run_id))
    except store.CorruptRecord as e:
        out(f"{prefix}: {e}; moved to {store.set_aside(folder, e, now())}, measuring it again")
        record = None
    if record is None and (Path(folder) / "runs").is_dir():
        record = next((r for r in store.read_runs(folder)
                       if RunConfig.from_dict(r["config"]).digest == config.digest), None)
    return record


def _decide(existing: dict | None, key: str, parts: dict, force: bool, rerun_failed: bool) -> tuple[str | None, str]:
    """(why a recorded run is skipped, or None to run it; why it runs again, or '')."""
    if existing is None:
        return None, ""
    if force:
        return None, "--force"
    # A run whose Ray worker died twice has no key (it died before saying its environment): a failed run anywhere.
    crashed = existing.get("key") is None and existing.get("executor") is not None
    if existing.get("key") != key and not crashed:  # another machine, version, code or setting
        return None, "what the measurement depends on changed: " + "; ".join(changes(existing.get("key_parts"), parts))
    if existing["status"] != "ok" and rerun_failed:
        return None, f"--rerun-failed (it {existing['status']})"
    return f"already recorded ({existing['status']})", ""


@dataclass(frozen=True)
class Decision:
    """What a run is, measured where it runs: its key (which holds that machine) and whether it runs."""

    key: str
    parts: dict
    skip: str | None  # why the recorded run stands, or None to measure it
    again: str  # why it is measured again, or ''


def decide(config: RunConfig, environment: dict, existing: dict | None, force: bool, rerun_failed: bool) -> Decision:
    """Whether to measure `config` in `environment` (this process's, on the machine that would run it)."""
    from .weights import identity

    parts = key_parts(config, environment, identity(config.weights))
    key = run_key(parts)
    return Decision(key, parts, *_decide(existing, key, parts, force, rerun_failed))


def measure(config: RunConfig, environment: dict, decision: Decision, verbose: int, callbacks: tuple = ()) -> dict:
    """run_one's record with what identifies the measurement: the same fields whichever executor ran it."""
    record = run_one(config, environment, verbose, callbacks)
    record.update(key=decision.key, key_parts=decision.parts, rerun_reason=decision.again or None)
    return record


def skipped(folder: Path, config: RunConfig, why: str, existing: dict) -> str:
    return (f"{why} in {store.run_path(folder, config.run_id)}, skipped"
            + (" (--rerun-failed to retry)" if existing["status"] != "ok" else " (--force to re-run)"))


def keep(folder: Path, record: dict, existing: dict | None, say: Callable[[str], None], prefix: str) -> None:
    """Write a finished run's record in place of the one it replaces, then the CSVs: the driver's part alone."""
    if existing is not None:
        say(f"{prefix}: previous record moved to {store.supersede(folder, existing)}")
    store.write_run(folder, record)
    with store.folder_lock(folder):  # the CSVs keep up with the records, even if a kill comes next
        store.rebuild(folder)


def schedule(suite: Suite, position: int, this_invocation: int, order: str) -> dict:
    """Where a run stood in its invocation: its position among the suite's runs (the shard's, with --shard)."""
    return {"position": position, "of": len(suite.runs), "this_invocation": this_invocation, "order": order,
            **({"shard": suite.shard} if suite.shard else {})}


def _run_here(suite: Suite, folder: Path, i: int, config: RunConfig, environment: dict, options: tuple,
              track: progress.SuiteProgress, finished: list[dict]) -> None:
    """Run i of the suite in this process, unless recorded; under its lock, so another runner cannot take it."""
    force, rerun_failed, verbose = options
    prefix = f"run {i}/{len(suite.runs)} {suite.describe(config)}"
    with store.run_lock(folder, config.run_id) as holder:
        if holder is not None:
            track.skip(i, prefix, f"another runner (pid {holder}) is running it, skipped")
            return
        # read under the lock: a concurrent runner may have just finished this run
        existing = recorded(folder, config, track.say, prefix)
        decision = decide(config, environment, existing, force, rerun_failed)
        if decision.skip:
            track.skip(i, prefix, skipped(folder, config, decision.skip, existing), existing)
            return
        if decision.again:
            track.say(f"{prefix}: measuring again: {decision.again}")
        track.start(i, config, prefix)
        t = time.perf_counter()
        record = measure(config, environment, decision, verbose, callbacks=(track.callback(),))
        seconds = time.perf_counter() - t
        record["schedule"] = schedule(suite, i, len(finished) + 1, "round-robin: every configuration once per repeat")
        keep(folder, record, existing, track.say, prefix)
        finished.append(record)
        track.end(config, record, seconds)


def run_suite(suite: Suite, folder: Path, force: bool = False, rerun_failed: bool = False,
              verbose: int | None = None) -> list[dict]:
    """Run every run not already recorded; each record is written the moment its run ends.

    Progress goes to a rich display on an interactive terminal, plain lines elsewhere (progress.for_terminal);
    verbose: Keras's fit verbosity, by default the display's."""
    folder = Path(folder)
    environment = console.capture_environment()
    track = progress.SuiteProgress(suite.runs, progress.for_terminal(len(suite.runs)))
    track.say(f"tlbench: suite '{suite.name}', {len(suite.runs)} runs (Keras {environment['versions'].get('keras')}, "
              f"backend {environment['keras_backend']}) -> {folder}")
    track.say(console.device_line(environment))
    for warning in console.device_warnings(environment):
        print(f"warning: {warning}", file=sys.stderr)
    options = (force, rerun_failed, track.verbose if verbose is None else verbose)
    finished, running = [], None
    try:
        with track:
            for i, config in enumerate(suite.runs, 1):
                interrupt.check()
                running = config.run_id
                _run_here(suite, folder, i, config, environment, options, track, finished)
                running = None
    except (KeyboardInterrupt, Interrupted) as e:
        code = e.code if isinstance(e, Interrupted) else 130
        track.say(f"interrupted: {len(finished)} run(s) recorded this time in {folder}"
                  + (f"; the run in progress ({running}) was not recorded" if running else ""))
        raise Interrupted(code) from None
    track.say(track.summary())
    return finished


def run_in_child(argv: list[str], backend: str) -> None:
    """Run `tlbench ARGV` in a child process with KERAS_BACKEND=backend; its output streams through.

    A signal that stops this process is passed on, so the child records what finished and stops too.
    """
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], env=env)
    try:
        with interrupt.raising():
            code = proc.wait()
    except (KeyboardInterrupt, Interrupted) as e:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise Interrupted(e.code if isinstance(e, Interrupted) else 130) from None
    if code in (130, 143):
        raise Interrupted(code)
    if code not in (0, 1):  # 1: some runs failed; they are recorded and reported with the rest
        raise UserError(f"the {backend} runs stopped (exit code {code}); see the messages above")
