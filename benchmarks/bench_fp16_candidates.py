"""The fp16 escalation's candidate listing: a graph copy per candidate (before) vs one copy (now).

Each escalation round lists the data-path nodes that are not islands yet. The loop used to rebuild
the pass's node list (a deep copy of the whole graph with Constant nodes folded) once *per
candidate*; it now builds it once per call. This script times both on a synthetic chain of
``--nodes`` Conv/Relu/Mul nodes with realistic 64-channel 3x3 weights, in one run, and prints the
ratio. Usage: ``python benchmarks/bench_fp16_candidates.py [--nodes 1500] [--sample 40]``
(the per-candidate variant is timed on ``--sample`` candidates and scaled to all of them).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from srdeploy.export import fp16


def chain(nodes: int, channels: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    ops, inits = [], []
    x = "lr"
    for i in range(nodes):
        y = f"t{i}"
        kind = i % 3
        if kind == 0:
            w = f"w{i}"
            cin = 3 if i == 0 else channels
            inits.append(numpy_helper.from_array(rng.standard_normal((channels, cin, 3, 3)).astype(np.float32), w))
            ops.append(helper.make_node("Conv", [x, w], [y], pads=[1, 1, 1, 1], name=f"conv{i}"))
        elif kind == 1:
            ops.append(helper.make_node("Relu", [x], [y], name=f"relu{i}"))
        else:
            c = f"c{i}"
            ops.append(helper.make_node("Constant", [], [c], value=numpy_helper.from_array(np.float32(0.5)), name=c))
            ops.append(helper.make_node("Mul", [x, c], [y], name=f"mul{i}"))
        x = y
    g = helper.make_graph(ops, "chain", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def per_candidate(graph: onnx.ModelProto, candidates: list[int]) -> list[str]:
    """The old listing: the node list rebuilt for every candidate."""
    return [
        fp16._node_name(list(fp16.constants_to_initializers(copy.deepcopy(graph)).graph.node)[i], i)
        for i in candidates
    ]


def hoisted(graph: onnx.ModelProto, candidates: list[int]) -> list[str]:
    """The listing as fp16.derive_fp16 does it now: one copy, then lookups."""
    nodes = list(fp16.constants_to_initializers(copy.deepcopy(graph)).graph.node)
    names = [fp16._node_name(n, i) for i, n in enumerate(nodes)]
    return [names[i] for i in candidates]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=1500)
    p.add_argument("--sample", type=int, default=40)
    args = p.parse_args()
    graph = chain(args.nodes)
    n_folded = len(fp16.constants_to_initializers(copy.deepcopy(graph)).graph.node)
    candidates = list(range(n_folded))
    sample = candidates[:: max(1, n_folded // args.sample)][: args.sample]
    t0 = time.perf_counter()
    old = per_candidate(graph, sample)
    t_old = (time.perf_counter() - t0) / len(sample) * len(candidates)
    t0 = time.perf_counter()
    new = hoisted(graph, candidates)
    t_new = time.perf_counter() - t0
    assert old == [new[i] for i in sample], "the two listings disagree"
    print(f"graph: {len(graph.graph.node)} nodes ({n_folded} after folding Constants), "
          f"{len(candidates)} candidates, {graph.ByteSize() / 1e6:.1f} MB")
    print(f"per-candidate copy: {t_old:.2f} s per round (timed on {len(sample)} candidates, scaled)")
    print(f"one copy (now):     {t_new * 1e3:.1f} ms per round")
    print(f"ratio: {t_old / t_new:.0f}x")


if __name__ == "__main__":
    main()
