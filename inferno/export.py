"""Export a trained summary statistic to ONNX, for inference outside PyTorch.

    from inferno.export import export_onnx, predict_onnx
    export_onnx(wrapper, "summary.onnx", n_features=3)          # network + hard bin
    probs, bins = predict_onnx("summary.onnx", x)                # onnxruntime

The ONNX graph takes ``x`` (float32, shape ``(batch, n_features)``, any batch size) and
returns ``probs``, the network's output (the soft bin assignments of an INFERNO network),
and, with ``with_argmax``, ``bin``: the hard bin of every event (int64, the index of the
largest output, the first one on ties, as ``torch.argmax``), the bin the templates are
filled with at inference time.

``onnx`` and ``onnxruntime`` are optional: ``pip install 'inferno[onnx]'``.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .training.wrapper import ModelWrapper, _atomic_write

__all__ = ["export_onnx", "predict_onnx", "DEFAULT_OPSET"]

#: the ONNX opset written by default (supported by onnxruntime >= 1.14)
DEFAULT_OPSET = 17

_INSTALL = "pip install 'inferno[onnx]'  (or: pip install onnx onnxruntime)"


def _require(module: str) -> Any:
    """Import an optional dependency, or raise an ImportError saying how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for ONNX export and inference but is not installed: {_INSTALL}") from e


class _WithArgmax(nn.Module):
    """The network, and the argmax of its output along the last axis as a second output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        y = self.net(x)
        return y, torch.argmax(y, dim=-1)


def _to_proto(module: nn.Module, dummy: Tensor, names: list, opset: int) -> Any:
    """The ONNX ModelProto of ``module`` with a dynamic batch axis: the TorchScript-based
    exporter (needs only ``onnx``) where torch still has it, else the ``torch.export``-based one
    (needs ``onnxscript``)."""
    onnx = _require("onnx")
    axes = {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    kwargs = dict(input_names=["x"], output_names=names, opset_version=opset, dynamic_axes=axes)
    legacy_error: Optional[BaseException] = None
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # torch >= 2.9 warns that this exporter is the legacy one
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                torch.onnx.export(module, (dummy,), buf, dynamo=False, do_constant_folding=True, **kwargs)
            except TypeError:  # torch < 2.5: no `dynamo` argument, the TorchScript exporter
                buf = io.BytesIO()
                torch.onnx.export(module, (dummy,), buf, do_constant_folding=True, **kwargs)
        return onnx.load_model_from_string(buf.getvalue())
    except Exception as e:  # the legacy exporter removed, or failing on this model
        legacy_error = e
    try:
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError:
        raise RuntimeError(f"the ONNX export failed: {legacy_error!r} (TorchScript exporter); the torch.export-based "
                           "exporter needs onnxscript: pip install onnxscript") from legacy_error
    try:
        prog = torch.onnx.export(module, (dummy,), dynamo=True, external_data=False, verbose=False, **kwargs)
        return prog.model_proto
    except Exception as e:
        raise RuntimeError(f"the ONNX export failed: {legacy_error!r} (TorchScript exporter); {e!r} "
                           "(torch.export-based exporter)") from e


def export_onnx(model: Union[nn.Module, ModelWrapper], path: Union[str, Path], n_features: int,
                with_argmax: bool = True, opset: int = DEFAULT_OPSET, check: bool = True) -> Path:
    """Write the network (and its hard bin assignment) as an ONNX model, atomically.

    Args:
        model: the network, or a :class:`~inferno.ModelWrapper` (its ``model``). It is
            exported in evaluation mode on the CPU, in float32; the caller's model is not
            changed (not moved, its training mode kept).
        path: the ``.onnx`` file; written to a temporary file in the same folder, then
            renamed over ``path`` (an interrupted export leaves an earlier file intact).
        n_features: the number of input features (the second axis of ``x``).
        with_argmax: add the output ``bin``: the index of the largest output of each event
            (int64), the hard bin assignment used at inference time. Needs an output of shape
            ``(batch, n_bins)``.
        opset: the ONNX opset version.
        check: run ``onnx.checker`` on the result before writing it.

    Returns:
        The path written. The graph's input is ``x`` (float32, ``(batch, n_features)``, any
        batch size); its outputs ``probs`` (the network's output) and, with
        ``with_argmax``, ``bin``. The file's metadata holds ``n_features``, ``n_bins`` and
        the output names.

    Raises:
        ImportError: ``onnx`` is not installed (``pip install 'inferno[onnx]'``).
        TypeError: ``model`` is not a torch module or a ModelWrapper.
        ValueError: ``n_features`` is not an integer >= 1, the network does not take inputs
            of ``n_features`` features, or (with ``with_argmax``) its output is not of shape
            ``(batch, n_bins)``.
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    from .data.dataset import _check_count

    onnx = _require("onnx")
    if isinstance(model, ModelWrapper):
        model = model.model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a ModelWrapper, got {type(model).__name__}")
    n_features = _check_count(n_features, "n_features")
    opset = _check_count(opset, "opset")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"export_onnx: the folder {path.parent} of {path} does not exist")

    import copy
    net = copy.deepcopy(model).to("cpu").float().eval()  # the caller's model stays as it is
    dummy = torch.randn(3, n_features, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = net(dummy)
    except Exception as e:
        raise ValueError(f"the network does not take inputs of {n_features} features (shape (batch, {n_features})): "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(out, Tensor):
        raise ValueError(f"the network must return one tensor, got {type(out).__name__}")
    if with_argmax and (out.ndim != 2 or out.shape[0] != 3 or out.shape[1] < 2):
        raise ValueError(f"with_argmax needs an output of shape (batch, n_bins >= 2), got {tuple(out.shape)} for a "
                         "batch of 3 events (export with with_argmax=False)")
    names = ["probs", "bin"] if with_argmax else ["probs"]
    module = _WithArgmax(net) if with_argmax else net
    proto = _to_proto(module, dummy, names, opset)
    meta = {"producer": "inferno", "n_features": str(n_features), "outputs": ",".join(names)}
    if out.ndim == 2:
        meta["n_bins"] = str(int(out.shape[1]))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    if check:
        onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    return _atomic_write(path, lambda f: f.write(data))


def predict_onnx(path: Union[str, Path], x: Any) -> Tuple[np.ndarray, ...]:
    """Run an ONNX model written by :func:`export_onnx` with onnxruntime on the CPU.

    Args:
        path: the ``.onnx`` file.
        x: the events, ``(n_events, n_features)`` (converted to float32).

    Returns:
        ``(probs, bin)`` (or ``(probs,)`` for a model exported without argmax), numpy arrays.

    Raises:
        ImportError: onnxruntime is not installed.
        FileNotFoundError: no file at ``path``.
        ValueError: ``x`` has the wrong number of features.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arr = np.ascontiguousarray(np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float32))
    if arr.ndim == 1:
        arr = arr[:, None]
    want = sess.get_inputs()[0].shape[1]
    if arr.ndim != 2 or (isinstance(want, int) and arr.shape[1] != want):
        raise ValueError(f"x must have shape (n_events, {want}), got {arr.shape}")
    return tuple(sess.run(None, {sess.get_inputs()[0].name: arr}))
