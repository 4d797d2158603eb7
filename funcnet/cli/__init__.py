"""The ``funcnet`` command: builds the top parser, asks the command's module to add its
own (``add_parser(subparsers)``), parses and runs it (``run(args)``).  One module per
command in this package (``COMMANDS``); every flag is declared once, in ``_flags``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ._commands import COMMANDS
from ._flags import UsageError
from ._process import one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, exit status 2 (argparse's convention), instead of the usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(
        prog="funcnet",
        description="funcnet: neural networks from scratch as pure functions, every "
        "gradient checked against JAX.  Each command's options: funcnet COMMAND -h.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    # Only the command run is imported (`funcnet demo` never loads JAX or MNIST code); the
    # others are only listed.
    named = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, what) in COMMANDS.items():
        if name == named:
            importlib.import_module(f".{module}", __name__).add_parser(sub)
        else:
            sub.add_parser(name, help=what)
    args = parser.parse_args(argv)
    from ._process import run_command  # signals, a closed stdout

    try:
        return run_command(args.run, args, f"funcnet {args.command}")
    except UsageError as e:  # flags that do not go together, found before any work
        sub.choices[args.command].error(str(e))
    except KeyboardInterrupt:  # outside training (which says more): one line, no traceback
        print(f"funcnet {args.command}: interrupted", file=sys.stderr)
        return 130


def run_script(main, name: str | None = None) -> None:
    """Run an example script's ``main()`` the way the ``funcnet`` commands run: missing
    data or a bad value is one line on stderr (exit 1), Ctrl-C one line (exit 130); never a
    traceback for those."""
    name = name or os.path.basename(sys.argv[0])
    try:
        main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, FloatingPointError) as e:  # MNISTError is a ValueError
        print(f"{name}: {one_line(e)}", file=sys.stderr)
        sys.exit(1)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("funcnet")
    except PackageNotFoundError:  # run from a checkout without installing
        from .. import __version__

        return __version__


if __name__ == "__main__":
    sys.exit(main())
