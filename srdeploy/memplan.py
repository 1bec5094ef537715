"""Memory planning for any input size: tile size from the device, out-of-memory retry, build OOM.

Torch-free (numpy and ``/proc`` only; the CUDA driver through ctypes when one is present).

* :func:`host_available_bytes` / :func:`device_memory` say how much memory there is to use.
* :class:`MemoryProfile` is what one inference costs: ``fixed + per_pixel * h * w`` bytes (LR
  pixels). On CPU it is *measured* (:func:`measure_cpu_profile`: two probe inferences and the
  peak-RSS growth between them); for a TensorRT engine it is the engine's own report of its
  activation memory for the profile's largest shape (:func:`engine_profile`).
* :func:`choose_tile` picks the largest tile whose cost fits the budget with a margin.
* :func:`run_with_oom_retry` reruns an image with half the tile when the backend runs out of
  memory (:func:`is_out_of_memory` recognises the real error types), with a one-line notice,
  down to the model's minimum, then raises :class:`OutOfMemoryError` (one line).
* :func:`build_oom_message` is the one-line error of a TensorRT build that failed with the
  workspace it had and the free GPU memory (called from ``srdeploy.export.engine``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .errors import BackendError
from .tiling import SizeRule, Tiling

T = TypeVar("T")

#: Fraction of the available memory a tile plan may use (the rest: other processes, fragmentation).
DEFAULT_MARGIN = 0.5
GiB = 1024**3
MiB = 1024**2


class OutOfMemoryError(BackendError):
    """The backend ran out of memory even at the smallest tile the model accepts."""

    exit_code = 3


# ------------------------------------------------------------------------------------------------
# how much memory is there
# ------------------------------------------------------------------------------------------------


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def host_available_bytes() -> int | None:
    """Available host memory: ``MemAvailable``, lowered to the cgroup (v2/v1) limit's headroom."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and usage is not None and limit < 1 << 60:
            room = max(limit - usage, 0)
            avail = room if avail is None else min(avail, room)
            break
    return avail


def device_memory(index: int = 0) -> tuple[int, int] | None:
    """``(free, total)`` bytes of CUDA device ``index`` through the driver API, or ``None`` without one."""
    path = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(path)
    except OSError:
        return None
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    try:
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
            return None
        if cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) != 0:
            return None
        try:
            if cuda.cuCtxPushCurrent_v2(ctx) != 0:
                return None
            ok = cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0
            cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        finally:
            cuda.cuDevicePrimaryCtxRelease_v2(dev)
    except AttributeError:  # a driver without the _v2 entry points
        return None
    return (int(free.value), int(total.value)) if ok else None


# ------------------------------------------------------------------------------------------------
# what one inference costs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryProfile:
    """Memory of one inference of an ``h x w`` LR input: ``fixed + per_pixel * h * w`` bytes."""

    per_pixel: float
    fixed: float
    source: str  # how it was obtained, for the notice

    def bytes_for(self, h: int, w: int) -> float:
        return self.fixed + self.per_pixel * h * w


def analytic_floor(scale: int, channels: int = 3) -> float:
    """Bytes per LR pixel no inference can go below: the float32 input and output tiles."""
    return 4.0 * channels * (1 + scale * scale)


def measure_cpu_profile(
    predict: Callable[[np.ndarray], np.ndarray], rule: SizeRule, scale: int, probe: int = 64
) -> MemoryProfile:
    """Measure a CPU predict function's memory per LR pixel from two probe inferences.

    Runs ``predict`` on ``a x a`` then ``2a x 2a`` inputs (``a`` = ``probe`` rounded up to what
    ``rule`` accepts) and reads the process's peak RSS (VmHWM) after each: the growth between
    them over the growth in pixels is the per-pixel cost (allocator arenas that keep memory,
    as ONNX Runtime's does, are counted correctly because the peak is cumulative; free heap
    already resident is first handed back with glibc's ``malloc_trim``, or the probes would reuse
    it unseen). Where the peak cannot be reset, falls back to a conservative analytic estimate
    (8x the I/O floor).
    """
    from srdeploy.runtime.memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss

    floor = analytic_floor(scale)
    if rule.fixed is not None:
        return MemoryProfile(floor, 0.0, "static-shape graph: I/O floor only")
    a, _ = rule.accepted(probe, probe)
    b, _ = rule.accepted(2 * a, 2 * a)
    rng = np.random.default_rng(0)
    _release_free_heap()  # free heap pages already resident would be reused unseen by the probes
    base = current_rss_bytes()
    if not reset_peak_rss():
        return MemoryProfile(8 * floor, 0.0, "peak RSS not resettable here: 8x the I/O floor")
    predict(rng.random((1, 3, a, a), dtype=np.float32))
    pa = max(peak_rss_bytes() - base, 0)
    predict(rng.random((1, 3, b, b), dtype=np.float32))
    pb = max(peak_rss_bytes() - base, 0)
    per_px = max((pb - pa) / float(b * b - a * a), floor)
    fixed = max(pa - per_px * a * a, 0.0)
    return MemoryProfile(per_px, fixed, f"measured on CPU from {a}x{a} and {b}x{b} probes")


def _release_free_heap() -> None:
    """glibc ``malloc_trim(0)``: give free heap pages back to the OS (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def engine_profile(activation_bytes: int, max_shape: tuple[int, int], scale: int) -> MemoryProfile:
    """A TensorRT engine's memory as it reports it: activation memory for the profile's largest
    shape (allocated once per execution context, whatever the tile), plus the tile's I/O buffers."""
    return MemoryProfile(analytic_floor(scale), float(activation_bytes),
                         f"TensorRT engine activation memory {activation_bytes / MiB:.0f} MiB "
                         f"(profile max {max_shape[0]}x{max_shape[1]})")


# ------------------------------------------------------------------------------------------------
# choosing the tile
# ------------------------------------------------------------------------------------------------


def tile_cost(profile: MemoryProfile, tile_h: int, tile_w: int, width: int, scale: int, blend: str) -> float:
    """Working memory of one tile: the inference, plus the output band the blend keeps.

    ``crop`` keeps one uint8 band (tile rows x output width x 3); the weighted blends keep a
    float32 strip and its carry (at most 2 tile rows x output width x 3 x 4 bytes).
    """
    band_rows = tile_h * scale
    band = band_rows * width * scale * 3 * (1 if blend == "crop" else 8)
    return profile.bytes_for(tile_h, tile_w) + band


def choose_tile(
    profile: MemoryProfile,
    budget: float,
    h: int,
    w: int,
    scale: int,
    rule: SizeRule,
    blend: str = "crop",
    cap: int | None = None,
    align: int = 8,
) -> int | None:
    """The largest square tile (a multiple of ``align``, at least ``rule.min_tile``, at most
    ``cap``) whose :func:`tile_cost` fits ``budget`` bytes; ``None`` means the whole image fits.

    When even the smallest tile does not fit, that smallest tile is returned: the run then relies
    on :func:`run_with_oom_retry` to fail with a clear message if memory really runs out.
    """
    if rule.fixed is not None:
        return None if (h, w) == rule.fixed else min(rule.fixed)
    lo = rule.min_tile
    step = math.lcm(max(align, 1), rule.multiple)
    if (cap is None or cap >= max(h, w)) and tile_cost(profile, h, w, w, scale, blend) <= budget:
        return None
    hi = max(h, w) if cap is None else min(cap, max(h, w))
    best = None
    t = max(lo, (hi // step) * step)
    while t >= lo:
        th, tw = min(t, h), min(t, w)
        if tile_cost(profile, th, tw, w, scale, blend) <= budget:
            best = t
            break
        t -= step
    if best is None:
        best = lo
    return None if best >= max(h, w) else best


# ------------------------------------------------------------------------------------------------
# out-of-memory at run time
# ------------------------------------------------------------------------------------------------

#: Message fragments of the real out-of-memory errors: ONNX Runtime's CPU arena and CUDA provider
#: (``RuntimeException: ... Failed to allocate memory for requested buffer of size``, ``bad_alloc``,
#: ``CUDA failure 2: out of memory``, cuDNN/cuBLAS ``ALLOC_FAILED``), the CUDA runtime
#: (``cudaErrorMemoryAllocation``, what TrtRunner's cudaMalloc returns), TensorRT
#: (``OUT_OF_MEMORY`` / ``out of memory``) and PyTorch (``CUDA out of memory``).
OOM_PATTERNS = (
    "failed to allocate memory",
    "bad_alloc",
    "bad allocation",
    "out of memory",
    "alloc_failed",
    "cudaerrormemoryallocation",
    "out_of_memory",
    "cannot allocate memory",
)


#: TrtRunner's "CUDA call failed with {err}": cudaErrorMemoryAllocation is 2; an IntEnum prints as
#: its name on Python 3.10 and as its value from 3.11 on.
_CUDA_OOM = re.compile(r"cuda call failed with (2|cudaerror_t\.cudaerrormemoryallocation)\b")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a backend out-of-memory error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # numpy / torch.cuda
            return not isinstance(e, OutOfMemoryError)  # ours is final: never retried
        text = str(e).lower()
        if any(p in text for p in OOM_PATTERNS) or _CUDA_OOM.search(text):
            return True
        e = e.__cause__ or e.__context__
    return False


def halve_tile(tile: int, rule: SizeRule, align: int = 8) -> int | None:
    """Half of ``tile``, rounded down to ``align`` (and the rule's multiple); ``None`` below the minimum."""
    step = math.lcm(max(align, 1), rule.multiple)
    half = tile // 2
    if half >= step:
        half = (half // step) * step
    if half < rule.min_tile:
        return None
    return half


def run_with_oom_retry(
    attempt: Callable[[Tiling | None], T],
    tiling: Tiling | None,
    h: int,
    w: int,
    rule: SizeRule,
    *,
    overlap: int = 16,
    blend: str = "crop",
    what: str = "image",
    notice: Callable[[str], None] | None = None,
    align: int = 8,
) -> T:
    """Run ``attempt(tiling)``; on an out-of-memory error halve the tile and run it again.

    ``tiling=None`` (whole image) starts the halving from the image's longer side. Each retry
    prints one notice line; below the model's minimum tile the error is one line too.
    """
    say = notice or (lambda msg: print(msg, file=sys.stderr))
    while True:
        try:
            return attempt(tiling)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            current = tiling.tile if tiling is not None and tiling.tile < max(h, w) else max(h, w)
            smaller = halve_tile(current, rule, align)
            if smaller is None:
                raise OutOfMemoryError(
                    f"{what}: out of memory even with {current}x{current} tiles, the model's smallest; "
                    "free memory (close other programs), use a smaller/fp16 model, or another device"
                ) from exc
            base = tiling or Tiling(max(smaller, 2), min(overlap, smaller // 2), blend)  # type: ignore[arg-type]
            tiling = base.with_tile(smaller)
            say(f"notice: {what}: out of memory with {current}x{current} tiles; retrying with {smaller}x{smaller}")


# ------------------------------------------------------------------------------------------------
# TensorRT build-time memory
# ------------------------------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / MiB:.0f} MiB"


def build_oom_message(
    workspace_bytes: int,
    max_shape: Sequence[int] | None,
    memory: tuple[int, int] | None,
    log_text: str = "",
) -> str:
    """One line for a failed TensorRT build: the workspace it had, the free GPU memory, and what to try.

    The build is called *out of memory* when the log says so (or says "could not find any
    implementation", TensorRT's usual symptom of tactics that did not fit), or when the GPU had
    less free memory than the workspace; otherwise the numbers are given as a possible cause.
    """
    shape = "x".join(str(d) for d in max_shape) if max_shape else "?"
    if memory is None:
        mem = "free GPU memory unknown (no CUDA driver answered)"
        short = False
    else:
        free, total = memory
        mem = f"{_gib(free)} of {_gib(total)} GPU memory free"
        short = free < workspace_bytes
    text = log_text.lower()
    said = any(p in text for p in OOM_PATTERNS) or "could not find any implementation" in text
    head = ("TensorRT failed to build the engine for lack of GPU memory" if said or short
            else "TensorRT failed to build the engine (possibly for lack of GPU memory)")
    return (f"{head}: workspace {_gib(workspace_bytes)}, profile max {shape}, {mem}; "
            "build with a smaller profile (--max-shape) or workspace (--workspace MiB), "
            "or free GPU memory")


def build_failure_message(workspace_bytes: int, profiles: Sequence[Any], log_text: str = "") -> str:
    """:func:`build_oom_message` for ``EngineOptions``-style profiles (objects with ``shapes()``)."""
    max_shape = None
    for p in profiles:
        try:
            s = tuple(p.shapes()["max"])
        except (AttributeError, KeyError, TypeError):
            continue
        if max_shape is None or math.prod(s) > math.prod(max_shape):
            max_shape = s
    return build_oom_message(workspace_bytes, max_shape, device_memory(), log_text)
