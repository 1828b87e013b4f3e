"""What ships to the device: load a verified bundle and answer queries with onnxruntime.

Imports only the standard library, numpy and onnxruntime (plus kgedge's numpy-only data index and
atomic writes): no torch, no onnx. ``tests/test_runtime_torch_free.py`` proves it.
"""

from kgedge.runtime.bundle import FORMAT, FORMAT_VERSION, Bundle, read_bundle
from kgedge.runtime.errors import BundleError, QueryError, UnknownNameError
from kgedge.runtime.model import EdgeModel
from kgedge.runtime.session import SessionSettings

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "EdgeModel",
    "QueryError",
    "SessionSettings",
    "UnknownNameError",
    "read_bundle",
]
