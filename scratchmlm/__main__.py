"""``python -m scratchmlm`` is the same as the ``scratchmlm`` command."""

import sys

from .cli import main

sys.exit(main())
