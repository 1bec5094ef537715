"""Host memory probes (Linux ``/proc``; no psutil needed).

The CPU equivalent of ``torch.cuda.max_memory_allocated`` is the peak resident set size (VmHWM).
On Linux the peak can be reset by writing ``5`` to ``/proc/self/clear_refs``; where that is not
allowed, the peak is the process lifetime peak and :func:`reset_peak_rss` says so by returning
``False``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    return (kb or 0) * 1024


def peak_rss_bytes() -> int:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS; ``False`` if the platform does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
