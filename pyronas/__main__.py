"""``python -m pyronas``: the same as the ``pyronas`` command."""

import sys

from pyronas.cli import main

sys.exit(main())
