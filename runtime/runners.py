"""Compatibility imports: the backends now live one per module in :mod:`srdeploy.runtime.backends`.

Kept so that code written against the old single module keeps importing; new code imports from
``srdeploy.runtime.backends`` (registry) and ``srdeploy.runtime.backends.<name>`` (runners, options).
"""

from __future__ import annotations

from .backends import MemoryReport, Runner, TensorMeta, Timing, make_runner
from .backends.onnxruntime import OrtOptions, OrtRunner
from .backends.tensorrt import TrtOptions, TrtRunner

__all__ = ["MemoryReport", "OrtOptions", "OrtRunner", "Runner", "TensorMeta", "Timing", "TrtOptions", "TrtRunner",
           "make_runner"]
