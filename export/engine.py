"""Compatibility module: the engine builders moved to :mod:`srdeploy.export.engines`."""

from __future__ import annotations

from srdeploy.cache import CACHE_ENV

from .engines import *  # noqa: F403
from .engines import __all__ as _all
from .engines.base import KEY_SCHEMA
from .engines.tensorrt import TensorRTFlavour, import_tensorrt, query_device

__all__ = [*_all, "CACHE_ENV", "KEY_SCHEMA", "TensorRTFlavour", "import_tensorrt", "query_device"]
