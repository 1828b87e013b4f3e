"""kgedge: knowledge-graph models from training to the edge.

Stages, each importing only the ones before it:
``data -> models -> train -> evaluate -> compress -> export -> runtime -> bench``; the CLI sits on top.
``kgedge.runtime`` is what ships to a device and needs only numpy and onnxruntime.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgedge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
