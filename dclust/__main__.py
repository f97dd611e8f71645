"""``python -m dclust``: the same as the ``dclust`` command."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
