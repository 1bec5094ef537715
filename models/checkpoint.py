"""Loading the authors' checkpoints safely, in every wrapper format they were released in.

* ``.safetensors`` files through safetensors;
* everything else through ``torch.load(weights_only=True)``: a file that needs arbitrary
  pickled code is refused;
* wrappers unwrapped in one place: BasicSR (``params_ema`` / ``params-ema`` preferred, else
  ``params``), mmcv (``state_dict`` with a ``generator.`` prefix), plain state dicts (A2N's legacy
  pickle). A wrapper declared by the weights manifest is used exactly (a file without it fails).
* a prefix (``module.`` of DataParallel, ``generator.``, ``netG.``, ``_orig_mod.`` of
  ``torch.compile``) is stripped only when *every* key has it, so ``module.x`` and ``x`` in one
  file stay two keys (and fail the strict load) instead of silently collapsing into one.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from srdeploy.errors import CheckpointError

_WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net", "generator")
_PREFIXES = ("module.", "generator.", "netG.", "_orig_mod.")
#: the manifest's ``wrapper`` values (srdeploy.weights.manifest.WRAPPERS) -> the key holding the state dict
_DECLARED = {"plain": None, "params_ema": "params_ema", "params": "params", "mmcv-generator": "state_dict"}


def read_checkpoint(path: str | os.PathLike[str], wrapper: str | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its (unwrapped, un-prefixed) state dict.

    ``wrapper``: the wrapper the weights manifest declares for the file (``None``: detect it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path or use a manifest name")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError("reading .safetensors needs: pip install safetensors") from exc
        try:
            obj: Any = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"checkpoint {path} is not a valid safetensors file ({exc})") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"checkpoint {path} needs arbitrary pickled code to load and was refused "
                "(torch.load weights_only=True); re-save it as a plain state dict or .safetensors"
            ) from exc
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"checkpoint {path} is corrupt or not a PyTorch file ({first}); download it again"
            ) from exc
    return unwrap_state_dict(obj, str(path), wrapper)


def _declared(obj: Any, origin: str, wrapper: str) -> Any:
    if wrapper not in _DECLARED:
        raise CheckpointError(f"unknown checkpoint wrapper {wrapper!r}; one of {', '.join(_DECLARED)}")
    key = _DECLARED[wrapper]
    if key is None:
        return obj
    if not isinstance(obj, Mapping) or not isinstance(obj.get(key), Mapping):
        found = sorted(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{origin}: the weights manifest declares wrapper {wrapper!r} but the file has no {key!r} "
            f"(found {found}); download it again or fix the manifest entry"
        )
    return obj[key]


def _strip_shared_prefixes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip each known prefix that every key has (repeatedly: ``module.generator.x`` -> ``x``)."""
    while True:
        shared = next((p for p in _PREFIXES if all(k.startswith(p) for k in tensors)), None)
        if shared is None:
            return tensors
        tensors = {k[len(shared):]: v for k, v in tensors.items()}


def unwrap_state_dict(obj: Any, origin: str = "checkpoint", wrapper: str | None = None) -> dict[str, torch.Tensor]:
    """Find the state dict inside the declared (or a known) wrapper and strip shared prefixes."""
    if wrapper is not None:
        obj = _declared(obj, origin, wrapper)
    seen = 0
    while wrapper is None and isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            break
        seen += 1
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{origin} holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin} holds no tensors under the known keys {', '.join(_WRAPPER_KEYS)}")
    # mmcv restorer checkpoints hold generator.* (and sometimes other sub-models): keep the generator
    if wrapper == "mmcv-generator" or (wrapper is None and any(k.startswith("generator.") for k in tensors)):
        tensors = {k: v for k, v in tensors.items() if k.startswith("generator.")}
        if not tensors:
            raise CheckpointError(f"{origin}: an mmcv checkpoint without generator.* weights; download it again")
    return _strip_shared_prefixes(tensors)


def _fmt(keys: list[str], limit: int = 6) -> str:
    head = ", ".join(keys[:limit])
    return head + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], model_name: str, origin: str) -> None:
    """Strictly load ``state`` into ``model`` with an error that names every mismatch."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected)}")
        if shaped:
            parts.append(f"mis-shaped (checkpoint vs model): {_fmt(shaped)}")
        raise CheckpointError(
            f"{origin} does not fit {model_name} (wrong model, variant or scale?): " + "; ".join(parts)
        )
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{origin} is corrupt: tensor {k} holds NaN or Inf; download it again")
    model.load_state_dict(dict(state), strict=True)
