"""Running the ``funcnet`` command from the tests (a helper, not a test file)."""

import signal
import subprocess
import sys
import time

from funcnet.cli import main as cli

FUNCNET = [sys.executable, "-m", "funcnet"]  # the command in a new interpreter


def call(capsys, *args):
    """``funcnet ARGS`` in this process: (exit status, stdout, stderr).  The same ``main``
    the ``funcnet`` script calls, without a new interpreter and JAX import each time; the
    tests that need the real process (its exit status, Ctrl-C) run ``FUNCNET``."""
    capsys.readouterr()
    try:
        code = cli(list(args))
    except SystemExit as stop:  # argparse's refusals
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def interruptible():
    """``preexec_fn`` of a command the tests signal.  A shell starts background jobs with
    SIGINT ignored, and ``nohup`` (a CI runner may use it) SIGHUP; funcnet leaves a signal
    ignored when it started so: give the child the terminal's defaults, as a person's run
    has."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start(argv, env) -> subprocess.Popen:
    """``funcnet ARGV`` as a process of its own, its stdout and stderr piped, signallable."""
    return subprocess.Popen([*FUNCNET, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=interruptible)  # fmt: skip


def signal_after(proc, first: str, sig=signal.SIGINT, wait: float = 90.0):
    """Send ``sig`` to ``proc`` once a line of its stdout starts with ``first`` (or after
    ``wait`` seconds), then let it end: (the lines up to that one, the rest of stdout,
    stderr).  The process is killed if it outlives the test."""
    printed = []
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            printed.append(proc.stdout.readline())
            if printed[-1].startswith(first):
                break
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return printed, rest, err
