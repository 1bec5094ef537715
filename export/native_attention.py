"""``--attention native``: the window-attention core as ONNX ``Attention`` (opset 23).

Two steps: :func:`apply_native_attention` swaps the model's contract-A cores for
:func:`srdeploy.models.attention.native_window_attention` before export (each writes one
placeholder node, ``srdeploy.native::WindowAttention(q, k, v, bias)``, with the bias gathered in
the graph from the compact table), and the graph pass :func:`to_native_attention` (onnx-graphsurgeon)
turns every placeholder into a standard ``Attention`` node (``scale`` attribute, bias as the additive
float mask) and raises the default-domain opset to 23. The ops the exporters write at opset 18-20
(Conv, MatMul, Softmax, Reshape, Gather, ...) have the same semantics at opset 23 (the later
versions only add types), which onnx.checker and the ORT validation then confirm on the result.
"""

from __future__ import annotations

from typing import Any

import onnx

from srdeploy.errors import ExportError

from .torch2onnx import Prepared


def apply_native_attention(prepared: Prepared, opset: int, plugins: bool) -> int:
    """Swap the attention cores of ``prepared.module``; return the opset the graph needs."""
    from srdeploy.models.attention import NATIVE_MIN_OPSET, use_native_attention

    if plugins:
        raise ExportError("--attention native and --plugins are two forms of the same layer; choose one")
    count = use_native_attention(prepared.module)
    if count == 0:
        raise ExportError(
            f"{prepared.descriptor.name} has no window-attention core to emit natively (ESC family only; ASID "
            "shares post-softmax maps across groups, which a fused attention never materialises); drop --attention"
        )
    prepared.notes.append(f"attention: native ONNX Attention in {count} layers")
    return max(opset, NATIVE_MIN_OPSET)


def to_native_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph pass: placeholder nodes -> ``Attention`` (opset 23). A graph without them is returned as is."""
    import onnx_graphsurgeon as gs
    from srdeploy.models.attention import NATIVE_MIN_OPSET, NATIVE_PLACEHOLDER_DOMAIN, NATIVE_PLACEHOLDER_OP

    if not any(n.domain == NATIVE_PLACEHOLDER_DOMAIN for n in model.graph.node):
        return model
    graph = gs.import_onnx(model)
    count = 0
    for node in graph.nodes:
        if node.domain == NATIVE_PLACEHOLDER_DOMAIN and node.op == NATIVE_PLACEHOLDER_OP:
            node.op, node.domain = "Attention", ""
            node.attrs = {"scale": float(node.attrs["scale"])}
            count += 1
    graph.opset = max(graph.opset, NATIVE_MIN_OPSET)
    out = gs.export_onnx(graph)
    keep = [o for o in out.opset_import if o.domain not in ("", "ai.onnx", NATIVE_PLACEHOLDER_DOMAIN)]
    del out.opset_import[:]
    out.opset_import.extend([onnx.helper.make_opsetid("", max(graph.opset, NATIVE_MIN_OPSET)), *keep])
    out.ir_version = model.ir_version
    if any(n.domain == NATIVE_PLACEHOLDER_DOMAIN for n in out.graph.node):
        raise ExportError("native attention pass left a placeholder node; this is a bug, please report it")
    return out


def native_manifest(graph: onnx.ModelProto) -> dict[str, Any]:
    from srdeploy.models.attention import NATIVE_BUILDERS

    n = sum(1 for node in graph.graph.node if node.op_type == "Attention")
    return {"form": "native", "attention_nodes": n, "builds_on": NATIVE_BUILDERS}


class NativeAttentionPass:
    """The registered graph pass (srdeploy.export.passes), first in the list: it owns the manifest's
    ``attention`` section (``{"form": "portable"}`` when ``--attention native`` was not asked for)."""

    name = "attention"

    def enabled(self, ctx: Any) -> bool:
        return True  # the section says which form the graph holds either way

    def run(self, graph: onnx.ModelProto, ctx: Any) -> tuple[onnx.ModelProto, dict[str, Any], list[str]]:
        if getattr(ctx.config, "attention", "portable") != "native":
            return graph, {"form": "portable"}, []
        out = to_native_attention(graph)
        return out, native_manifest(out), []


PASS = NativeAttentionPass()
