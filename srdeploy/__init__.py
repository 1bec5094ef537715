"""srdeploy: efficient super-resolution from PyTorch to ONNX and TensorRT, measured NTIRE-style.

The package is one namespace mapped from the repository's top-level folders:
``srdeploy.models`` (models/), ``srdeploy.export`` (export/), ``srdeploy.runtime`` (runtime/),
``srdeploy.plugins`` (plugins/), ``srdeploy.weights`` (weights/). This core holds what every
side shares and that needs no PyTorch: errors, size parsing, image I/O, tiling, atomic writes.
"""

__version__ = "0.1.0"
