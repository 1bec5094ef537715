"""Error types whose message is one line that says what to do next.

Command-line entry points catch :class:`SrdeployError`, print ``error: <message>`` on stderr and
exit with the error's :attr:`~SrdeployError.exit_code`; anything else is a bug and keeps its
traceback. Exit codes:

* ``2`` (:data:`EXIT_USAGE`, as argparse): the request is wrong: unknown model, bad scale, size,
  flag combination, input file or checkpoint. Fix the command line.
* ``1`` (:data:`EXIT_FAILED`): a valid request failed while running: export validation, an
  ONNX Runtime / TensorRT failure, a NaN output. The message says what to try.
* ``3`` (:data:`EXIT_MISSING_DEPENDENCY`): an optional dependency is missing; install it.
* ``130``: interrupted.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 3


class SrdeployError(Exception):
    """A user-facing error: the message is one line and names the fix."""

    exit_code = EXIT_USAGE


class UnknownModelError(SrdeployError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedScaleError(SrdeployError, ValueError):
    pass


class CheckpointError(SrdeployError):
    """A checkpoint is missing, corrupt, unsafe, or for another model/variant/scale."""


class InputImageError(SrdeployError):
    """An input file is missing, not an image, or too large."""


class ShapeError(SrdeployError, ValueError):
    """An input shape violates a model's size constraints or an engine profile."""


class MissingDependencyError(SrdeployError, ImportError):
    """An optional dependency is not installed; the message carries the install command."""

    exit_code = EXIT_MISSING_DEPENDENCY


class ExportError(SrdeployError):
    """Export or validation failed; nothing was written."""

    exit_code = EXIT_FAILED


class BackendError(SrdeployError):
    """A runtime backend failed to load a model or run it."""

    exit_code = EXIT_FAILED


F = TypeVar("F", bound=Callable[..., int])


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (newlines and runs of spaces become one space)."""
    return " ".join(str(exc).split())


def cli_errors(func: F) -> F:
    """Wrap a CLI ``main`` so that user errors print one line and exit non-zero."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> int:
        try:
            return func(*args, **kwargs)
        except SrdeployError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("error: interrupted; no partial output was left behind", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingDependencyError` with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc}); install it with: pip install 'srdeploy[{extra}]'"
        ) from exc
