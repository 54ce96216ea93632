"""Entry point of ``python -m proofs_check`` (see :mod:`proofs_check._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
