"""Two-graph export for arbitrary-scale implicit models (CiaoSR, contract C).

``STEM.encoder.onnx``: ``lr`` (N, 3, H, W) -> ``feat_k`` (N, 9D, H, W), ``feat_v`` (N, 10D, H, W),
dynamic N/H/W. ``STEM.decoder.onnx``: (``feat_k``, ``feat_v``, ``lr``, ``coord`` (N, Q, 2),
``cell`` (N, Q, 2)) -> ``rgb`` (N, Q, 3), dynamic N/H/W/Q. Any scale, integer or not, uses the
same pair: the torch-free runtime makes the coordinates and drives chunked decoding
(:func:`srdeploy.implicit.decode_image`). A single whole-image graph would materialise every
query at once and does not fit in memory at useful sizes.

Validation: each graph against its PyTorch half (two sizes, one odd, batch 1 and 2), then the
whole pipeline (ONNX Runtime encoder + chunked ONNX Runtime decoder) against the PyTorch model's
``upscale`` at the built scale and at a non-integer scale.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from srdeploy import onnxlayer

from .compare import Comparison, Tolerance, compare
from .torch2onnx import DYNAMO_FIRST, Exporter, Prepared, onnx_from_torch
from .validate import Case, Validation, check_model

ENC_OUT = ("feat_k", "feat_v")
DEC_IN = ("feat_k", "feat_v", "lr", "coord", "cell")


@dataclass
class TwoGraphs:
    encoder: onnx.ModelProto
    decoder: onnx.ModelProto
    exporter: str
    seconds: float
    notes: tuple[str, ...]


def export_two_graphs(prepared: Prepared, lo: int, opset: int, exporter: Exporter, seed: int) -> TwoGraphs:
    from srdeploy.models._seeding import seeded_input

    from srdeploy.implicit import make_cell, make_coord

    model = prepared.module
    enc = model.encoder_module().eval()
    dec = model.decoder_module().eval()
    x = seeded_input((2, 3, lo, lo), seed)  # N=2: an example N=1 would specialise the batch
    hmin = max(prepared.descriptor.min_size, 2)
    e = onnx_from_torch(
        enc,
        (x,),
        output_names=ENC_OUT,
        dynamic_axes={"lr": {0: ("N", 1), 2: ("H", hmin), 3: ("W", hmin)}},
        opset=opset,
        exporter=exporter,
        auto_order=DYNAMO_FIRST,
    )
    with torch.inference_mode():
        fk, fv = enc(x)
    q = 37
    coord = torch.from_numpy(make_coord(2 * lo, 2 * lo)[:q]).unsqueeze(0).expand(2, q, 2).contiguous()
    cell = torch.from_numpy(make_cell(2 * lo, 2 * lo, q)).unsqueeze(0).expand(2, q, 2).contiguous()
    spatial = {0: ("N", 1), 2: ("H", hmin), 3: ("W", hmin)}
    d = onnx_from_torch(
        dec,
        (fk, fv, x, coord, cell),
        input_names=DEC_IN,
        output_names=("rgb",),
        dynamic_axes={
            "feat_k": spatial,
            "feat_v": spatial,
            "lr": spatial,
            "coord": {0: ("N", 1), 1: ("Q", 1)},
            "cell": {0: ("N", 1), 1: ("Q", 1)},
        },
        opset=opset,
        exporter=exporter,
        auto_order=DYNAMO_FIRST,
    )
    return TwoGraphs(e.model, d.model, f"{e.exporter}+{d.exporter}", e.seconds + d.seconds, e.notes + d.notes)


def validate_two_graphs(
    prepared: Prepared,
    encoder: onnx.ModelProto,
    decoder: onnx.ModelProto,
    inputs: Sequence[tuple[Case, np.ndarray]],
    tol: Tolerance,
    scales: Sequence[float],
    chunk: int = 997,
) -> Validation:
    """Per-graph checks, then the chunked ONNX Runtime pipeline against ``model.upscale``."""
    from srdeploy.implicit import decode_image, hr_size, make_cell, make_coord

    for g in (encoder, decoder):
        check_model(g)
    es = onnxlayer.session(encoder, onnxlayer.SessionConfig(intra_op_threads=2))
    ds = onnxlayer.session(decoder, onnxlayer.SessionConfig(intra_op_threads=2))
    model = prepared.reference
    result = Validation("fp32", tol)

    def record(label: str, out: np.ndarray, ref: np.ndarray, ref64: np.ndarray | None = None) -> None:
        if out.shape != ref.shape:
            result.failures.append(f"{label}: shape {out.shape} != PyTorch {ref.shape}")
            return
        cmp: Comparison = compare(out, ref, ref64)
        result.results.append((Case(out.shape[0], _size(label)), cmp))
        result.failures.extend(f"{label}: {m}" for m in cmp.failures(tol))

    def dec_fn(fk: np.ndarray, fv: np.ndarray, lr: np.ndarray, coord: np.ndarray, cell: np.ndarray) -> Any:
        return ds.run(None, {"feat_k": fk, "feat_v": fv, "lr": lr, "coord": coord, "cell": cell})[0]

    for case, x in inputs:
        fk, fv = es.run(None, {"lr": x})
        with torch.inference_mode():
            rk, rv = model.encode(torch.from_numpy(x))
        record(f"encoder feat_k {case}", fk, rk.numpy())
        record(f"encoder feat_v {case}", fv, rv.numpy())
        h, w = case.size
        q = 101
        coord = np.array(np.broadcast_to(make_coord(2 * h, 2 * w)[:q], (case.batch, q, 2)))
        cell = np.array(np.broadcast_to(make_cell(2 * h, 2 * w, q), (case.batch, q, 2)))
        got = dec_fn(rk.numpy(), rv.numpy(), x, coord, cell)
        with torch.inference_mode():
            ref = model.decode(rk, rv, torch.from_numpy(x), torch.from_numpy(coord), torch.from_numpy(cell))
        record(f"decoder {case}", got, ref.numpy())
    case, x = inputs[-1]
    model64 = copy.deepcopy(model).double()  # the fp32 noise floor of the whole pipeline
    for s in scales:
        oh, ow = hr_size(case.size.h, case.size.w, float(s))
        fk, fv = es.run(None, {"lr": x})
        out = decode_image(dec_fn, fk, fv, x, oh, ow, chunk)
        with torch.inference_mode():
            ref = model.upscale(torch.from_numpy(x), out_size=(oh, ow)).numpy()
            ref64 = None
            if model64 is not None:
                ref64 = model64.upscale(torch.from_numpy(x).double(), out_size=(oh, ow)).numpy()
        record(f"pipeline x{s:g} {case.batch}x3x{oh}x{ow}", out, ref, ref64)
    return result


def _size(label: str) -> Any:
    from srdeploy.sizes import Size

    dims = label.split()[-1].split("x")
    return Size(int(dims[-2]), int(dims[-1]))
