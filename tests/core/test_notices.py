"""The shared stderr notices are one line and name the fix."""

from __future__ import annotations

import io

from srdeploy.notices import random_weights_text, warn, warn_random_weights


def test_random_weights_notice_is_one_line_naming_seed_and_fix() -> None:
    buf = io.StringIO()
    warn_random_weights("esc x4", seed=7, stream=buf)
    out = buf.getvalue()
    assert out.count("\n") == 1 and out.startswith("warning: esc x4 has random weights (seed 7)")
    assert "--weights" in out
    assert "(seed" not in random_weights_text("span x4")


def test_warn_collapses_embedded_newlines() -> None:
    buf = io.StringIO()
    warn("a\nb  c", stream=buf)
    assert buf.getvalue() == "warning: a b c\n"
