"""``python -m ordertrail``: the same command line as the ``ordertrail`` console script."""

import sys

from ordertrail.cli import main

if __name__ == "__main__":
    sys.exit(main())
