"""``python -m ood_lens``: the ``ood-lens`` command (see :mod:`ood_lens.cli`)."""
import sys

from ood_lens.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ood_lens"))
