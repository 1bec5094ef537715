"""The C++ plugin table (names, versions, creator lists) is generated from the specs (issue 11 item 3).

``plugins/csrc/sr_plugin_table.gen.h`` is checked in; this fails when it is not what
``python -m srdeploy.plugins.gen_creators`` writes for the specs now, or when a registered plugin
is missing from it. Cheap (no build): the native build tests compile the header.
"""

from __future__ import annotations

import re
import subprocess
import sys

from srdeploy.plugins import gen_creators
from srdeploy.plugins.registry import PLUGINS
from srdeploy.plugins.spec import OP_TYPES, load_spec


def test_checked_in_header_is_current() -> None:
    for path, text in gen_creators.outputs().items():
        assert path.read_text() == text, f"{path} is stale; run `python -m srdeploy.plugins.gen_creators`"
    proc = subprocess.run([sys.executable, "-m", "srdeploy.plugins.gen_creators", "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_table_lists_every_plugin_once_with_its_spec_version() -> None:
    text = gen_creators.HEADER.read_text()
    creators = re.findall(r"^    X\((\w+)\) \\$", text, re.M)
    assert len(creators) == len(set(creators)) == len(OP_TYPES) == len(PLUGINS)
    assert f"#define SRDEPLOY_PLUGIN_COUNT {len(OP_TYPES)}" in text
    for op in OP_TYPES:
        spec = load_spec(op)
        const = spec.raw["cpp"]["constants"]
        assert f'{const}Name = "{op}";' in text and f'{const}Version = "{spec.plugin_version}";' in text
        assert spec.raw["cpp"]["creator"] in creators


def test_one_folder_per_plugin() -> None:
    """plugins/csrc/<Op>/ holds the plugin's kernel, class and creator; the build globs the folders."""
    cmake = (gen_creators.CSRC.parents[1] / "CMakeLists.txt").read_text()
    assert "${SR_CSRC}/*/kernel.cu" in cmake and "${SR_CSRC}/*/plugin.cpp" in cmake
    folders = sorted(p.name for p in gen_creators.CSRC.iterdir() if p.is_dir())
    assert folders == sorted(OP_TYPES)
    for op in OP_TYPES:
        assert {"kernel.cu", "plugin.h", "plugin.cpp"} <= {p.name for p in (gen_creators.CSRC / op).iterdir()}, op
        assert f'#include "{op}/plugin.h"' in gen_creators.CLASSES.read_text()


def test_entry_points_use_the_table_not_their_own_lists() -> None:
    csrc = gen_creators.HEADER.parent
    for name in ("entry_creators.cpp", "entry_static.cpp"):
        src = (csrc / name).read_text()
        assert "SRDEPLOY_FOR_EACH_CREATOR(" in src, name
        for op in OP_TYPES:  # no creator class named by hand
            assert load_spec(op).raw["cpp"]["creator"] not in src, (name, op)
