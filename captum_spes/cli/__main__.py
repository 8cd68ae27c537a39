"""``python -m captum_spes.cli``: the ``captum-spes`` command line (as ``python -m captum_spes``)."""

import sys

from captum_spes.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
