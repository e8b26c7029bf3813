"""``python -m nnkern.bench ...``: the same as ``nnkern bench ...``."""
import sys

from . import main

sys.exit(main())
