"""Shared fixtures. Paths to the bundled real test assets live here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # CI has 2 cores; keep torch from oversubscribing when pytest-xdist is not used.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(os.environ.get("SRDEPLOY_TEST_THREADS", "2")))
