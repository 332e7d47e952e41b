"""``python -m inferno.htautau``: the ``inferno-bench`` command (:mod:`inferno.htautau.run`)."""
import sys

from .run import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
