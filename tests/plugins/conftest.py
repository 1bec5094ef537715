"""Fixtures of the plugin tests: one cached native build per session (build/plugins)."""

from __future__ import annotations

from pathlib import Path

import pytest
from srdeploy.plugins import build

BUILD_DIR = build.REPO_ROOT / "build" / "plugins"


@pytest.fixture(scope="session")
def native_build() -> Path:
    """Configure + build CMakeLists.txt once (archs 87;89;90, pinned kernel-lens headers).

    The first build takes about a minute on 2 cores; later sessions reuse build/plugins and only
    recompile what changed. Skips when nvcc or cmake is absent.
    """
    missing = build.tools_missing()
    if missing:
        pytest.skip(f"native plugin build needs nvcc and cmake: {missing}")
    return build.build_native(BUILD_DIR)
