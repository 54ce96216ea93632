"""Entry point of ``python -m proofs_check`` (see :mod:`proofs_check.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
