"""``python -m inferno.paper``: the paper reproduction command (same as ``inferno-paper``)."""
import sys

from .cli import main

sys.exit(main())
