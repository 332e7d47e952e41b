"""inferno: inference-aware training of summary statistics (INFERNO) in PyTorch.

The public API is re-exported here; see ``docs/`` for the user guide.
"""
from .data import *  # noqa: F401,F403
from .callback import *  # noqa: F401,F403
from .model_wrapper import *  # noqa: F401,F403
from .interp import *  # noqa: F401,F403
from .inference import *  # noqa: F401,F403
from .nuisance import *  # noqa: F401,F403
from .inferno import *  # noqa: F401,F403
from .paper import *  # noqa: F401,F403
from .pyhf import *  # noqa: F401,F403
from . import plotting  # noqa: F401  (inferno.plotting.plot_templates, ...; matplotlib loads on first use)

from ._version import __version__  # noqa: E402
