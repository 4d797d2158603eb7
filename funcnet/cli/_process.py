"""How a ``funcnet`` command meets its process: signals (``funcnet._signals``) and a stdout
that the reader may close (``funcnet demo | head -1``).

Python ignores SIGPIPE, so a write to a closed pipe raises ``BrokenPipeError`` wherever the
command happens to print: before training (nothing trained, nothing saved), in the middle,
or at exit while flushing.  A closed stdout only means nobody reads the rest: the command
goes on with its output dropped, so that a run still writes its files, and ends quietly.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Callable

from .. import _signals


class _DropWhenClosed(io.TextIOBase):
    """A text stream that writes to ``inner`` until the reader closes it, and from then on
    drops what it is given.  Everything else (``isatty``, ``encoding``, ...) is ``inner``'s."""

    def __init__(self, inner):
        self._inner = inner
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self._inner.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._inner.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        """From now on write nowhere, through this object and through the file descriptor
        (C code, the interpreter's final flush of what is still buffered)."""
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError):
            fd = self._inner.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def fileno(self) -> int:
        return self._inner.fileno()

    def isatty(self) -> bool:
        return not self.reader_gone and self._inner.isatty()


@contextlib.contextmanager
def stdout_may_close():
    """``sys.stdout`` wrapped in :class:`_DropWhenClosed` while the block runs."""
    inner = sys.stdout
    if inner is None or isinstance(inner, _DropWhenClosed):
        yield
        return
    sys.stdout = _DropWhenClosed(inner)
    try:
        yield
    finally:
        with contextlib.suppress(BrokenPipeError, ValueError):
            sys.stdout.flush()
        sys.stdout = inner


def run_command(command: Callable[[object], int], args, name: str) -> int:
    """``command(args)``'s exit status, the command run as a process should run it: Ctrl-C,
    SIGTERM and SIGHUP at any moment end it in one line on stderr (the command may say more
    first, e.g. what it saved) with 128 + the signal's number; a closed stdout drops the
    rest of the output and lets the command finish."""
    broken = False
    with stdout_may_close(), _signals.handled(name):
        try:
            status = command(args)
        except KeyboardInterrupt:  # outside training (which says more): one line, no traceback
            with _signals.holding():
                print(f"{name}: interrupted", file=sys.stderr, flush=True)
                status = 130
        except Exception as e:
            if type(e).__name__ not in ("XlaRuntimeError", "JaxRuntimeError"):
                raise
            with _signals.holding():
                status, broken = _xla_failed(name, e), True
        with _signals.holding():
            status = _signals.exit_status(status)
            if (status > 128 or broken) and _distributed():
                # A run of several processes that ends early: JAX's shutdown barrier at exit
                # would wait for peers that may be gone or stuck, then abort with a C++
                # stack.  The files are written; end here, once the peers know.
                _leave_now(status)
    return status


def _distributed() -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and jax.process_count() > 1


def _leave_now(status: int) -> None:
    from .. import parallel

    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(Exception):
        parallel.leave(5.0 if status > 128 else 0.0)
    os._exit(status)


def _xla_failed(name: str, error: Exception) -> int:
    """A computation that XLA could not finish, in one line.  In a run of several processes
    it is a collective whose peer is gone (its socket closed); when an ending signal reached
    this process too (SIGTERM to every process: a peer that handled it first has left the
    step), it is that signal's interrupt."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    distributed = _distributed()
    # The signal may land a moment after the peer's leaving broke the collective.
    signum = _signals.arrived(wait=0.5 if distributed else 0.0)
    if signum is not None:
        how = signal.Signals(signum).name
        print(f"{name}: interrupted ({how}) while its peers ended too; finished checkpoints "
              "are on disk", file=sys.stderr, flush=True)  # fmt: skip
        return 130
    hint = " (a peer process gone?); finished checkpoints are on disk" if distributed else ""
    print(f"{name}: a computation failed: {first}{hint}", file=sys.stderr, flush=True)
    return 1


__all__ = ["run_command", "stdout_may_close"]


def one_line(error: BaseException) -> str:
    """An error message on one line: its first line and, for a longer one (MNIST's list of
    searched folders), its last, which says what to do."""
    first, *rest = str(error).splitlines() or [""]
    return f"{first} {rest[-1].strip()}" if rest else first
