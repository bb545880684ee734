"""``python -m scratchmlm`` is the same as the ``scratchmlm`` command.

``run`` is the console script's entry point too. It imports the command line inside a ``try``, so
a Ctrl-C that arrives while Python is still loading it is one line and exit status 130, not a
traceback (``scratchmlm/__init__.py`` imports nothing heavy, so nothing before this can take long).
"""

import sys


def run() -> int:
    try:
        from .harness.cli import main
    except KeyboardInterrupt:
        print("scratchmlm: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
