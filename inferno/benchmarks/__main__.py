"""``python -m inferno.benchmarks``: the ``inferno-bench`` command (:mod:`inferno.benchmarks.run`)."""
import sys

from .run import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
