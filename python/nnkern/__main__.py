"""``python -m nnkern ...``: the same commands as the ``nnkern`` console script."""
import sys

from .cli import main

sys.exit(main())
