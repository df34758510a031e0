"""What a suite shows while it runs: an ETA from finished epochs and runs, a line per run, a summary.

On an interactive terminal a rich display keeps one overall bar (elapsed time, ETA) under the lines of
the finished runs; elsewhere (a pipe, a CI log, a dumb terminal, TTY_INTERACTIVE=0) plain lines: one as
each run starts, with the ETA, and one as it ends.

The display adds no work inside a timed epoch: it is redrawn at epoch ends and run boundaries only, never
by a refresh thread, and learns of epochs from a callback with epoch hooks alone (a batch hook would make
Keras sync the device every step, see clock.py).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from .config import RunConfig
from .modes import MODES


@dataclass(frozen=True)
class _Sample:
    """What one run of a kind cost: the steady epoch's seconds per unit of work, and the rest of the run."""

    kind: str
    trainable: bool
    rate: float
    overhead: float  # seconds beyond its epochs at that rate: data, build, feature extraction, first-epoch tracing
    steady: bool  # the rate is from steady epochs; otherwise from first epochs only, an upper bound


class Eta:
    """Remaining time of a suite from the epochs already timed, first epochs apart from steady ones.

    A run to come is estimated from finished runs of its kind (strategy or mode), else of its trainability;
    before there are any, from the others scaled by TRAINABLE_COST (runs that train the backbone cost about
    4x a frozen one: measured CPU step times, 5 vs 21 ms and 1.2 vs 5 ms per image on CPU). The run in progress
    counts its own finished epochs, so the estimate improves within the first run.
    """

    TRAINABLE_COST = 4.0

    def __init__(self):
        self.samples: list[_Sample] = []
        self.running: tuple[RunConfig, list[tuple[float, bool]]] | None = None  # (config, (seconds, steady))

    @staticmethod
    def work(c: RunConfig) -> float:
        """One epoch's work: training images, plus validation images at about a third of their cost."""
        return (c.train_size or 50000) + (c.val_size or 10000) / 3

    @staticmethod
    def trainable(c: RunConfig) -> bool:
        return MODES.get(c.mode).trainable if c.mode in MODES else True

    @classmethod
    def cost(cls, c: RunConfig) -> float:
        """A whole run's cost before any is timed, in frozen images: what shard.py balances shards by."""
        return c.epochs * cls.work(c) * (cls.TRAINABLE_COST if cls.trainable(c) else 1.0)

    @classmethod
    def _sample(cls, c: RunConfig, seconds: float, epochs: list[tuple[float, bool]]) -> _Sample | None:
        if not epochs:
            return None
        steady = [s for s, is_steady in epochs if is_steady]
        per_epoch = statistics.fmean(steady) if steady else seconds / len(epochs)
        return _Sample(c.strategy or c.mode, cls.trainable(c), per_epoch / cls.work(c),
                       max(seconds - per_epoch * len(epochs), 0.0), bool(steady))

    def start(self, c: RunConfig) -> None:
        self.running = (c, [])

    def epoch(self, seconds: float, steady: bool) -> None:
        self.running[1].append((seconds, steady))

    def add(self, c: RunConfig, seconds: float, rows: list[dict]) -> None:
        """A finished run: its wall seconds and its clock rows."""
        sample = self._sample(c, seconds, [(r["epoch_seconds"], r["phase"] == "steady") for r in rows])
        if sample is not None:
            self.samples.append(sample)
        self.running = None

    def _pool(self) -> list[_Sample]:
        """The finished runs, and the run in progress once it has a steady epoch (or nothing else is known)."""
        if self.running is None or not self.running[1]:
            return self.samples
        config, epochs = self.running
        own = self._sample(config, sum(s for s, _ in epochs), epochs)
        return [*self.samples, own] if own.steady or not self.samples else self.samples

    def _estimate(self, c: RunConfig, pool: list[_Sample]) -> tuple[float, float]:
        """(seconds per unit of work of a steady epoch, overhead seconds) for a run of c."""
        like = ([s for s in pool if s.kind == (c.strategy or c.mode)]
                or [s for s in pool if s.trainable == self.trainable(c)])
        scale = 1.0
        if not like:
            like, scale = pool, self.TRAINABLE_COST if self.trainable(c) else 1 / self.TRAINABLE_COST
        return (statistics.fmean(s.rate for s in like) * scale, statistics.fmean(s.overhead for s in like) * scale)

    def _left(self, c: RunConfig, done: int, pool: list[_Sample]) -> float:
        rate, overhead = self._estimate(c, pool)
        return (overhead if done == 0 else 0.0) + (c.epochs - done) * rate * self.work(c)

    def remaining(self, todo: list[RunConfig]) -> float | None:
        """Seconds left: the rest of the run in progress, then the runs of todo; None before any epoch ended."""
        pool = self._pool()
        if not pool:
            return None
        current = self._left(self.running[0], len(self.running[1]), pool) if self.running else 0.0
        return current + sum(self._left(c, 0, pool) for c in todo)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _fmt_eta(seconds: float | None, pending: str = "ETA after the first run") -> str:
    return pending if seconds is None else f"ETA {duration(seconds)}"


def run_line(label: str, record: dict, seconds: float) -> str:
    """'run 2/3 …: ok in 41 s · val acc 83.1% @1, 84.5% @5 · steady 13.7 s/epoch': the epochs the table
    reports by default (the first and the last), and the median steady epoch, as the table computes it."""
    if record["status"] != "ok":
        return f"{label}: {record['status'].upper()}: {record['error']}"
    rows = record.get("epochs") or []
    shown = [r for r in (rows[:1] + rows[1:][-1:]) if r.get("val_accuracy") is not None]
    parts = [f"ok in {duration(seconds)}"]
    if shown:
        parts.append("val acc " + ", ".join(f"{100 * r['val_accuracy']:.1f}% @{r['epoch']}" for r in shown))
    steady = [r["epoch_seconds"] for r in rows if r["phase"] == "steady"]
    if steady:
        parts.append(f"steady {statistics.median(steady):.1f} s/epoch")
    xla = record.get("xla") or {}
    if xla.get("requested") == "on" and not xla.get("resolved"):
        parts.append("XLA was asked for (jit_compile: on) but Keras trained without it")
    return f"{label}: " + " · ".join(parts)


def _flushed(text: str) -> None:
    print(text, flush=True)  # a pipe buffers: the line is in the log when the run starts, not at the end


class Plain:
    """Lines for a log: the run's start with the ETA, Keras's own line per epoch, the run's end."""

    verbose = 2  # Keras's one line per epoch: no carriage returns, so a log stays readable

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def line(self, text: str, failed: bool = False) -> None:
        _flushed(text)

    def started(self, label: str, eta: float | None) -> None:
        _flushed(f"{label} ({_fmt_eta(eta)})")

    def update(self, completed: float, description: str, eta: float | None) -> None:
        """Between epochs: a log gets Keras's epoch line already."""


class Rich:
    """One overall bar with elapsed time and ETA under the lines of the finished runs."""

    # Keras's bar rewrites its line with carriage returns and would tear the live display; the overall bar
    # says where the suite is at every epoch end, so fit runs silent (the record keeps verbose=0).
    verbose = 0

    def __init__(self, console, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # auto_refresh off: a refresh thread would draw inside the timed epochs, so it is redrawn between them.
        # The run's name comes last: a narrow terminal cuts it, not the numbers.
        self.bar = Progress(BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[eta]}"), TextColumn("{task.description}"), console=console,
                            auto_refresh=False)
        self.task = self.bar.add_task("", total=total, eta=_fmt_eta(None, "ETA after the first epoch"))

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def line(self, text: str, failed: bool = False) -> None:
        self.bar.console.print(text, style="bold red" if failed else None, markup=False, highlight=False)

    def started(self, label: str, eta: float | None) -> None:
        self.update(self.bar.tasks[0].completed, label, eta)

    def update(self, completed: float, description: str, eta: float | None) -> None:
        self.bar.update(self.task, completed=completed, description=description,
                        eta=_fmt_eta(eta, "ETA after the first epoch"), refresh=True)


def for_terminal(total: int):
    """The rich display on an interactive terminal, plain lines elsewhere."""
    from rich.console import Console

    console = Console()
    return Rich(console, total) if console.is_interactive else Plain()


class SuiteProgress:
    """The suite's counts, ETA and display, fed by run_suite as runs start, end or are skipped."""

    def __init__(self, runs: list[RunConfig], display):
        self.runs, self.display, self.eta = runs, display, Eta()
        self.ran = self.failed = self.skipped = 0
        self.started_at = time.perf_counter()
        self._position, self._label = 0, ""

    @property
    def verbose(self) -> int:
        return self.display.verbose

    def __enter__(self):
        self.display.__enter__()
        return self

    def __exit__(self, *exc):
        return self.display.__exit__(*exc)

    def say(self, text: str) -> None:
        self.display.line(text)

    def skip(self, position: int, label: str, why: str, record: dict | None = None) -> None:
        """A run not run here; an ok record of it (same key: this machine, this code) still times its kind."""
        self.skipped += 1
        if record is not None and record["status"] == "ok":
            self.eta.add(RunConfig.from_dict(record["config"]), _seconds(record), record["epochs"])
        self.say(f"{label}: {why}")
        self.display.update(position, label, self.eta.remaining(self.runs[position:]))

    def start(self, position: int, config: RunConfig, label: str) -> None:
        self._position, self._label = position, label
        self.eta.start(config)
        self.display.started(label, self.eta.remaining(self.runs[position:]))

    def epoch(self, seconds: float, steady: bool) -> None:
        self.eta.epoch(seconds, steady)
        config, done = self.eta.running
        self.display.update(self._position - 1 + len(done) / config.epochs,
                            f"{self._label} · epoch {len(done)}/{config.epochs}",
                            self.eta.remaining(self.runs[self._position:]))

    def end(self, config: RunConfig, record: dict, seconds: float) -> None:
        self.recorded(config, record, seconds, self._label)
        self.display.update(self._position, self._label, self.eta.remaining(self.runs[self._position:]))

    def recorded(self, config: RunConfig, record: dict, seconds: float, label: str) -> None:
        """A finished run counted, learnt from for the ETA, and its result line shown."""
        self.ran += 1
        self.failed += record["status"] != "ok"
        self.eta.add(config, seconds, record.get("epochs") or [])
        self.display.line(run_line(label, record, seconds), failed=record["status"] != "ok")

    def summary(self) -> str:
        return (f"finished in {duration(time.perf_counter() - self.started_at)}: {self.ran} ran "
                f"({self.failed} failed or diverged), {self.skipped} skipped")

    def callback(self):
        """A Keras callback that reports each epoch's seconds (steady: not the first of its fit)."""
        import keras

        report = self.epoch

        class EpochProgress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.first = True

            def on_epoch_begin(self, epoch, logs=None):
                self.began = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                report(time.perf_counter() - self.began, not self.first)
                self.first = False

        return EpochProgress()


def _seconds(record: dict) -> float:
    """A stored run's wall time from its start and finish stamps (whole seconds); without them, its epochs'."""
    from datetime import datetime

    try:
        return (datetime.fromisoformat(record["finished"]) - datetime.fromisoformat(record["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return sum(r["epoch_seconds"] for r in record["epochs"])
