"""The one way to load the TensorRT plugin library (engine builder and TensorRT runner alike).

The library is ``libsrdeploy_plugins.so`` (:func:`srdeploy.plugins.library_path`, the
``getCreators`` variant that ``trtexec --dynamicPlugins`` also takes). It registers its creators
only through ``IPluginRegistry::loadLibrary`` (TensorRT calls its ``getCreators``); a plain
``ctypes.CDLL`` registers nothing. So both the builder and the runner call
:func:`load_plugin_library`, which hands the file to ``trt.get_plugin_registry().load_library``.
Torch-free; TensorRT is passed in (imported by the caller, possibly a test double).

Tools that load a plugin library with ``dlopen`` themselves (Polygraphy's ``--plugins`` runs
``ctypes.CDLL`` on each path) need the library that registers on load:
:func:`dlopen_library` maps the getCreators library to its static-registration sibling
``libsrdeploy_plugins_static.so`` (built by the same CMake project, into the same folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from srdeploy.errors import BackendError, MissingDependencyError

BUILD_HINT = "build it with `python -m srdeploy.plugins.build` (or set $SRDEPLOY_PLUGIN_LIBRARY)"


def load_plugin_library(trt: Any, path: str | os.PathLike[str] | None = None) -> Path:
    """Register the plugin creators of ``path`` (default :func:`srdeploy.plugins.library_path`)
    with TensorRT's plugin registry; return the path. One-line errors when the file is missing or
    TensorRT refuses it."""
    from . import library_path

    lib = Path(path) if path is not None else library_path()
    if not lib.is_file():
        raise MissingDependencyError(f"TensorRT plugin library {lib} does not exist; {BUILD_HINT}")
    if trt.get_plugin_registry().load_library(str(lib)) is None:
        raise BackendError(
            f"TensorRT could not load plugin library {lib}; rebuild it for this TensorRT and GPU ({BUILD_HINT})"
        )
    return lib


def dlopen_library(path: str | os.PathLike[str]) -> str:
    """The library a dlopen-based loader (Polygraphy ``--plugins``) needs in place of ``path``:
    the static-registration variant next to the getCreators library; any other path unchanged."""
    from .build import LIBRARIES

    p = Path(path)
    if p.name == LIBRARIES["plugins"]:
        return str(p.with_name(LIBRARIES["plugins_static"]))
    return str(p)
