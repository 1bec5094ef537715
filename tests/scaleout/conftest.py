"""One local Ray cluster on 127.0.0.1 for the whole session (start-up costs ~10-17 s on 2 cores).

Measured here (2 cores, other engineers' jobs running): ``ray.init`` 10-17 s, a first task 0.5 s,
then ~2.3 ms per trivial task; a Ray Data job's 2-actor pool starts in ~5 s. So every Ray test
shares this cluster, and the job sizes stay small.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from rt_helpers import save_tiny

SIZES = [(150, 190), (190, 150), (141, 173)]  # mixed LR sizes, HxW
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """Ray (and the in-process scale-out CLIs) replace SIGINT/SIGTERM handlers; later tests (and
    the child processes they start, which inherit an ignored SIGINT) need Python's own back."""
    saved = {s: signal.getsignal(s) for s in _SIGNALS}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Start a 2-CPU local cluster on loopback; yield its GCS address; always shut it down."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'srdeploy[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'srdeploy[ray]')")
    saved = {s: signal.getsignal(s) for s in _SIGNALS}
    ray.init(address="local", include_dashboard=False, num_cpus=2, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level=logging.WARNING)
    for s, h in saved.items():  # the driver's handlers would outlive this fixture's users (see above)
        signal.signal(s, h)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-built x2 conv net (16 channels) with srdeploy metadata: fast on ORT CPU."""
    return save_tiny(tmp_path_factory.mktemp("artifact"), 2, channels=16)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 random RGB PNGs of three sizes."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(18)
    for i in range(12):
        h, w = SIZES[i % len(SIZES)]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"im{i:02d}.png")
    return d
