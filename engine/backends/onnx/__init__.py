"""The ONNX Runtime backend, torch-free at run time: ``layout`` (the ``onnx/`` folder contract),
``inputs`` (the processor's inputs rebuilt from the folder's files), ``rope`` (numpy position
indices) and ``backend`` (:class:`OnnxBackend`).

``OnnxBackend`` is imported on first use, so reading the folder contract (``layout``, used by the
exporter and the packaging) does not load the backend's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.backends.onnx.backend import OnnxBackend

__all__ = ["OnnxBackend"]


def __getattr__(name: str) -> Any:
    if name == "OnnxBackend":
        from engine.backends.onnx.backend import OnnxBackend

        return OnnxBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
