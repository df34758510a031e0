"""How SIGINT and SIGTERM stop a suite: at a safe point, never halfway through an import or a file.

An exception raised by a signal handler lands wherever the interpreter happens to be. Found there: inside
TensorFlow's import it becomes `ImportError: initialization failed`; inside a Keras weakref callback Python
prints it as "Exception ignored" with a traceback and carries on; while the tables are written it escapes
as a traceback. So the handler only notes the signal and asks the models that are training or predicting
(`stoppable`) to stop after their current batch; the runner raises `Interrupted` at its check points
(`check`): before and after each fit or extraction, between runs, between the files of the tables. Only
where waiting is the whole job (a child process) does `raising` let the handler raise at once.

A second signal while stopping is acknowledged and otherwise ignored, so what is being written is
finished; kill -9 remains safe because records are written whole or not at all.
"""
from __future__ import annotations

import contextlib
import os
import signal

_code: int | None = None  # 128 + the first signal's number, the shell's exit status for it
_models: list = []
_raising = False


class Interrupted(BaseException):
    """The suite stops; `code` is the exit status (130 Ctrl-C, 143 SIGTERM).

    A BaseException, like KeyboardInterrupt, so that the per-run `except Exception` does not record an
    interrupted run as a failed one.
    """

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _say(text: str) -> None:
    # os.write, not print: a handler that prints while the interrupted code is printing to the same
    # buffered stream raises "reentrant call".
    os.write(2, f"tlbench: {text}\n".encode())


def _handle(signum, _frame) -> None:
    global _code
    name = signal.Signals(signum).name
    if _code is not None:
        _say(f"{name}: already stopping, finishing what is being written (kill -9 is safe: "
             "finished runs are on disk whole)")
        return
    _code = 128 + signum
    _say(f"{name}: stopping at the next safe point (a training run stops after its current batch "
         "and is not recorded)")
    for model in _models:
        model.stop_training = model.stop_evaluating = model.stop_predicting = True
    if _raising:
        raise Interrupted(_code)


def install() -> None:
    """Route SIGINT and SIGTERM through this module (the `run` command, before it does anything else)."""
    global _code
    _code = None  # a fresh command in the same process (tests call main() in-process) starts unstopped
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def requested() -> bool:
    return _code is not None


def check() -> None:
    """Raise Interrupted if a signal came since install()."""
    if _code is not None:
        raise Interrupted(_code)


@contextlib.contextmanager
def stoppable(model):
    """Around model.fit / model.predict: a signal stops the model after its current batch, and the
    block is followed by check(). fit and predict clear the stop flag when they start, so a signal that
    came before is caught by the check on entry."""
    check()
    _models.append(model)
    try:
        yield
    finally:
        _models.remove(model)
    check()


@contextlib.contextmanager
def raising():
    """Around a blocking wait with nothing half-done: a signal raises Interrupted at once."""
    global _raising
    check()
    _raising = True
    try:
        yield
    finally:
        _raising = False
