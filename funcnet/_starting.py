"""The ``funcnet`` command while it is still being imported (a second or so: NumPy, JAX).

Imported first by the package, on its own: when this process is the command (``python -m
funcnet ...`` or the ``funcnet`` script), SIGINT, SIGTERM and SIGHUP end it from here on in
one line with 128 + the signal's number, instead of a ``KeyboardInterrupt`` traceback out
of whatever module was loading, until ``funcnet._signals.handled`` takes over for the
command itself.  A program that imports funcnet as a library (one run with ``python -m``
included) keeps its handlers, and so does a signal that the process was started ignoring.
It imports only what Python has loaded before any code runs, so that the moment before it
takes effect is as short as it can be.
"""

import _signal
import os
import sys

__all__: list[str] = []


def _ended(signum, frame) -> None:
    words = [a for a in sys.argv[1:2] if not a.startswith("-")]
    line = f"{' '.join(['funcnet', *words])}: interrupted while starting\n"
    os.write(2, line.encode())
    os._exit(128 + signum)


def _is_the_command() -> bool:
    """``python -m funcnet ...`` (from the interpreter's own command line: a program run
    with ``-m`` whose package imports funcnet is not the command) or the ``funcnet`` script."""
    orig = list(getattr(sys, "orig_argv", []))
    if "-m" in orig[:-1]:
        return orig[orig.index("-m") + 1] == "funcnet"
    argv0 = sys.argv[0] if sys.argv else ""
    return os.path.basename(argv0) == "funcnet"


def _install() -> None:
    if not _is_the_command():
        return
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(_signal, name, None)
        if signum is None:
            continue
        try:
            if _signal.getsignal(signum) in (_signal.SIG_DFL, _signal.default_int_handler):
                _signal.signal(signum, _ended)
        except ValueError:  # not the main thread: not the command's start
            return


_install()
