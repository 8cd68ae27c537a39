"""``python -m captum_spes``: the ``captum-spes`` command line."""

import sys

from captum_spes.cli import main

if __name__ == "__main__":
    sys.exit(main())
