"""Running the ``funcnet`` command from the tests (a helper, not a test file)."""

import sys

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
