"""inferno.likelihood: one statistical model (HistFactory semantics) for every measurement."""
from .model import Channel, Model, Sample
from .modifiers import HistoSys, Lumi, NormFactor, NormSys, ShapeFactor, ShapeSys, StatError
from .parameters import Parameter

__all__ = ["Model", "Channel", "Sample", "Parameter", "NormFactor", "NormSys", "HistoSys", "Lumi",
           "StatError", "ShapeSys", "ShapeFactor"]
