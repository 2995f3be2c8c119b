"""``python -m mtpjax ...``: the ``mtpjax`` command line (:func:`mtpjax.cli.main`)."""

import sys

from mtpjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
