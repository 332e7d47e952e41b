"""Layers for INFERNO networks."""
from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["VariableSoftmax"]


class VariableSoftmax(nn.Softmax):
    r"""Softmax with a temperature: :math:`\mathrm{softmax}(x / T)` along ``dim``.

    A low temperature (the paper trains with :math:`T = 0.1`) makes the soft assignments
    close to the hard (argmax) ones used at inference time.
    """

    def __init__(self, temp: float = 1.0, dim: int = -1):
        super().__init__(dim=dim)
        temp = float(temp)
        if not (math.isfinite(temp) and temp > 0):
            raise ValueError(f"temp must be finite and > 0, got {temp}")
        self.temp = temp

    def forward(self, x: Tensor) -> Tensor:
        # explicit exp / sum: on CPU it is several times faster than torch.softmax for the
        # few-bin outputs used here, and softmax is invariant to the (detached) shift
        z = x / self.temp
        z = z - z.detach().amax(dim=self.dim, keepdim=True)
        e = z.exp()
        return e / e.sum(dim=self.dim, keepdim=True)

    def extra_repr(self) -> str:
        return f"temp={self.temp}, dim={self.dim}"
