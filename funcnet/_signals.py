"""SIGINT, SIGTERM and SIGHUP as one thing: a ``KeyboardInterrupt`` in the main thread, so
that whatever ends a run on Ctrl-C (``train.fit`` keeps the finished epochs) ends it on the
signals that SLURM, Kubernetes, ``timeout`` and a closed terminal send too.

Three places where a signal must not land:

- Python runs a signal's handler at the next bytecode of the main thread, which may be
  inside a ``gc.callbacks`` function (JAX registers ``_xla_gc_callback``; the collector runs
  it whenever allocations pile up, often during imports and compilation) or a ``__del__``.
  An exception raised there is printed as "Exception ignored in ..." and dropped: the
  Ctrl-C is lost and the run goes on.  The handler sees that context on the stack and has
  the signal delivered again a moment later, outside it.
- An import: a module imported lazily on the way (JAX, by the first command that needs
  it) may be a C extension whose initialization runs Python code, and an exception raised
  there becomes a C++ exception that ends the process in ``terminate`` (jaxlib's nanobind
  enums): an abort with a traceback inside its message.  The handler sees the import
  machinery on the stack and has the signal delivered again a moment later, after it.
- A checkpoint write: :func:`deferred` holds any signal until the file is in place, so
  that the interrupt that asks for the params to be saved cannot cut their file short.

And one place where Python cannot run the handler at all: a main thread blocked in C++ (a
collective waiting for a peer that died or hangs, an XLA deadlock) never reaches its next
bytecode, so the signal would be ignored for as long as the wait lasts.  A watchdog thread
sees every signal through ``signal.set_wakeup_fd``; when the handler has not run
:data:`GRACE` seconds later, it says so in one line and ends the process with 128 + the
signal's number (what finished epochs' checkpoints hold is on disk already).
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import os
import signal
import sys
import threading
import time

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupt(KeyboardInterrupt):
    """A signal that ends the run; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Seconds the main thread has to run a signal's handler before the watchdog acts: longer
# than one XLA compilation of a training step on a loaded machine, which also keeps the main
# thread in C++ and then returns.
GRACE = 30.0


class _State:
    """The handler's state, kept in one object: what arrived, what waits for a write."""

    received: int | None = None  # the first ending signal of the run, once handled
    arrived: int | None = None  # the first one the watchdog saw, handled or not yet
    depth = 0  # nested deferred() blocks
    pending: int | None = None  # a signal that arrived inside them
    runs = 0  # times the handler ran: the watchdog's proof that the main thread is alive
    name = "funcnet"


_state = _State()


# Methods whose exceptions their C callers drop or replace: a ``__del__``'s are printed
# and dropped; NumPy turns a KeyboardInterrupt raised in a JAX scalar's ``__float__`` (as
# ``np.asarray`` of a list of losses calls it) into "ValueError: setting an array element
# with a sequence".
_SWALLOWED = ("__del__", "__array__", "__float__", "__int__", "__index__", "__complex__")


def _unraisable_context(frame) -> bool:
    """Whether ``frame`` or a caller is a gc callback, one of :data:`_SWALLOWED` or the
    import machinery: code whose exceptions are dropped or replaced on their way out, or
    that a C extension's initialization may turn into an abort."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name in _SWALLOWED:
            return True
        if code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _redeliver(signum: int) -> None:
    """The signal again, in 10 ms: Python runs the handler on the main thread then."""
    timer = threading.Timer(0.01, _thread.interrupt_main, (signum,))
    timer.daemon = True
    timer.start()


def _handler(signum, frame) -> None:
    _state.runs += 1
    if _state.received is None:
        _state.received = signum
    if _state.depth:
        _state.pending = _state.pending or signum
        return
    if _unraisable_context(frame):
        _redeliver(signum)
        return
    raise Interrupt(signum)


@contextlib.contextmanager
def handled(name: str = "funcnet"):
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupt` (a ``KeyboardInterrupt``) in
    the main thread while the block runs, and end the process from a watchdog thread when
    the main thread is stuck in C++ (``name`` starts its line); the handlers before it come
    back after.  A signal that the process was started ignoring (``nohup``, a shell's
    background job) stays ignored.  Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield _state
        return
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    _state.received = _state.pending = _state.arrived = None
    _state.name = name
    read, write = os.pipe()
    os.set_blocking(write, False)
    old_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    watchdog_args = (read, _state.runs)
    threading.Thread(target=_watchdog, args=watchdog_args, daemon=True, name="signals").start()
    try:
        for s, old in saved.items():
            if old is not signal.SIG_IGN:
                signal.signal(s, _handler)
        yield _state
    finally:
        for s, old in saved.items():
            if old is not None:
                signal.signal(s, old)
        signal.set_wakeup_fd(old_fd)
        os.close(write)  # the watchdog reads end-of-file and stops


def _watchdog(read: int, runs_before: int) -> None:
    """Every signal's number arrives here as one byte; one of ours that the main thread has
    not handled within :data:`GRACE` seconds ends the process.  Signals are counted, not
    timed: the handler often runs before this thread reads the byte, and then has already
    counted it (``runs_before``: the handler's runs when the block began)."""
    seen = 0
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while byte := pipe.read(1):
            signum = byte[0]
            if signum not in SIGNALS:
                continue
            seen += 1
            _state.arrived = _state.arrived or signum
            deadline = time.monotonic() + GRACE
            while time.monotonic() < deadline and _state.runs - runs_before < seen:
                time.sleep(0.05)
            if _state.runs - runs_before < seen:
                name = signal.Signals(signum).name
                print(f"{_state.name}: {name}, but the computation under way has not returned "
                      f"for {GRACE:g} s (a peer gone or hung?); ending the process; finished "
                      "checkpoints are on disk", file=sys.stderr, flush=True)  # fmt: skip
                os._exit(128 + signum)


@contextlib.contextmanager
def deferred():
    """Hold the signals of :func:`handled` until the block ends, then raise the first one
    that came: for writes that must finish once begun (a few milliseconds)."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    if not _state.depth and _state.pending is not None:
        signum, _state.pending = _state.pending, None
        raise Interrupt(signum)


@contextlib.contextmanager
def holding():
    """Hold the signals of :func:`handled` while the block runs and raise none of them
    after it: for the code that already ends the run (its last lines, its exit status),
    which an ``Interrupt`` raised in the middle would only cut short.  :func:`received`
    still says what came."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if not _state.depth:
            _state.pending = None


def arrived(wait: float = 0.0) -> int | None:
    """The first ending signal that reached this process since :func:`handled` began,
    whether or not its handler has run (the main thread may have been in C++), or None;
    with ``wait`` > 0, waiting up to that many seconds for one, handlers running meanwhile."""
    deadline = time.monotonic() + wait
    while True:
        signum = _state.received or _state.arrived
        if signum is not None or time.monotonic() >= deadline:
            return signum
        time.sleep(0.02)


def received() -> int | None:
    """The first ending signal since :func:`handled` began, or None."""
    return _state.received


def exit_status(status: int) -> int:
    """A run's exit status, with an interrupt told apart by its signal: 128 + the signal's
    number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), the shell's convention."""
    signum = _state.received or _state.arrived
    if status == 130 and signum is not None:
        return 128 + signum
    return status


__all__ = [
    "SIGNALS", "Interrupt", "arrived", "deferred", "exit_status", "handled", "holding", "received",
]  # fmt: skip
