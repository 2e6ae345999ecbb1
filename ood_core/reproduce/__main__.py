"""``python -m ood_core.reproduce``: see :mod:`ood_core.reproduce.cli`."""
import sys

from ood_core.reproduce.cli import main

sys.exit(main())
