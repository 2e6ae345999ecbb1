"""``ood-lens``: one command for the dashboard and the two command-line tools (see :mod:`ood_lens.cli`)."""
from ood_core import __version__

__all__ = ["__version__"]
