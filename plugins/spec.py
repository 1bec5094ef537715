"""Plugin specs: inputs, attributes, dtypes and tolerances of each plugin, read by the tests.

The specs are the JSON files next to this module (``SRWindowAttention.json``,
``CiaoSRLocalEnsemble.json``); they are the single source for names, the ONNX domain and the
tolerance table (units in the key names: ``max_rel`` = max|diff| / max|ref|).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from srdeploy.errors import SrdeployError

PLUGIN_DOMAIN = "trt.plugins"
WINDOW_ATTENTION = "SRWindowAttention"
LOCAL_ENSEMBLE = "CiaoSRLocalEnsemble"
_HERE = Path(__file__).resolve().parent
#: every plugin with a spec file beside this module
OP_TYPES = tuple(sorted(p.stem for p in _HERE.glob("*.json")))


@dataclass(frozen=True)
class PluginSpec:
    op_type: str
    domain: str
    plugin_version: str
    plugin_namespace: str
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]
    attributes: dict[str, dict[str, Any]]
    kernel: dict[str, Any]
    tolerances: dict[str, dict[str, float]]
    raw: dict[str, Any]

    def _allows(self, entries: tuple[dict[str, Any], ...], dtype: str) -> tuple[bool, ...]:
        by_name = {e["name"]: e for e in self.inputs}
        out = []
        for e in entries:
            dtypes = list(e.get("dtypes", []))
            while len(dtypes) == 1 and str(dtypes[0]).startswith("same as "):  # "same as q" follows q
                dtypes = list(by_name[str(dtypes[0]).removeprefix("same as ")].get("dtypes", []))
            out.append(dtype in dtypes)
        return tuple(out)

    def fp16_inputs(self) -> tuple[bool, ...]:
        """Per input (spec order): whether the spec lets it be float16 (``"same as X"`` follows X)."""
        return self._allows(self.inputs, "float16")

    def follows_first(self) -> tuple[bool, ...]:
        """Per input: whether its dtype must equal the first input's (``"same as <first>"``).

        The others (SRWindowAttention's ``bias_table``) may keep their own type: a weight stays
        fp32 in an fp16 graph, as the kernel's ``supportsFormatCombination`` allows."""
        first = self.inputs[0]["name"]
        return tuple(i == 0 or list(e.get("dtypes", [])) == [f"same as {first}"] for i, e in enumerate(self.inputs))

    def fp16_outputs(self) -> tuple[bool, ...]:
        """Per output: whether the spec lets it be float16."""
        return self._allows(self.outputs, "float16")

    def max_rel(self, key: str) -> float:
        """Tolerance ``max|diff|/max|ref|`` for ``key`` (``float32``, ``float16``, ``emulation_vs_...``)."""
        try:
            return float(self.tolerances[key]["max_rel"])
        except KeyError:
            raise SrdeployError(
                f"{self.op_type}: no tolerance '{key}' in its spec; add it to plugins/{self.op_type}.json"
            ) from None


@cache
def load_spec(op_type: str) -> PluginSpec:
    """The spec of plugin ``op_type`` (one of :data:`OP_TYPES`)."""
    path = _HERE / f"{op_type}.json"
    if op_type not in OP_TYPES or not path.is_file():
        raise SrdeployError(f"unknown plugin '{op_type}'; known plugins: {', '.join(OP_TYPES)}")
    raw = json.loads(path.read_text())
    return PluginSpec(
        op_type=raw["op_type"],
        domain=raw["domain"],
        plugin_version=raw["plugin_version"],
        plugin_namespace=raw["plugin_namespace"],
        inputs=tuple(raw["inputs"]),
        outputs=tuple(raw["outputs"]),
        attributes=dict(raw["attributes"]),
        kernel=dict(raw["kernel"]),
        tolerances=dict(raw["tolerances"]),
        raw=raw,
    )
