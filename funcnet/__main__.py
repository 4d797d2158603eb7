"""``python -m funcnet``: the same as the ``funcnet`` command."""

import sys

from .cli import main

sys.exit(main())
