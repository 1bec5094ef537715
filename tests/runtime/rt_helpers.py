"""Runtime test helpers: tiny ONNX graphs built with onnx.helper, a torch-blocking subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from srdeploy.records import ArtifactRecord

REPO = Path(__file__).resolve().parents[2]


def tiny_sr_model(scale: int = 2, channels: int = 8, static: tuple[int, int] | None = None,
                  metadata: dict[str, str] | None = None, seed: int = 0) -> onnx.ModelProto:
    """lr (N,3,H,W) -> Conv3x3(3->C) -> Relu -> Conv3x3(C->3*s*s) -> DepthToSpace(CRD) + nearest skip."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((channels, 3, 3, 3)) * 0.05).astype(np.float32)
    b1 = np.zeros(channels, np.float32)
    w2 = (rng.standard_normal((3 * scale * scale, channels, 3, 3)) * 0.02).astype(np.float32)
    b2 = np.zeros(3 * scale * scale, np.float32)
    h, w = static if static else ("H", "W")
    nodes = [
        helper.make_node("Conv", ["lr", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c2"], ["d"], blocksize=scale, mode="CRD"),
        helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["d", "up"], ["sr"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"))
    graph = helper.make_graph(
        nodes, "tiny_sr",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "SH", "SW"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # the exporter's own record class, so a schema change breaks these fixtures, not a report
    meta = ArtifactRecord("tiny", scale, descriptor={"min_size": 1, "default_tiling": None}).to_metadata()
    meta.update(metadata or {})
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def save_tiny(folder: Path, scale: int = 2, stem: str | None = None, **kw: object) -> Path:
    path = folder / f"{stem or f'tiny_x{scale}'}.onnx"
    onnx.save(tiny_sr_model(scale, **kw), str(path))  # type: ignore[arg-type]
    return path


def make_dataset(root: Path, data_dir: Path, scale: int = 2, with_lr: bool = True, test: bool = True) -> Path:
    """valid/ (2 images) and test/ (1 image) cut from the bundled baboon, HR + LR (bicubic)."""
    im = Image.open(data_dir / "baboon.png").convert("RGB")
    boxes = {"valid": [(0, 0, 64, 48), (100, 120, 164, 184)], "test": [(300, 300, 372, 348)]}
    for split, bxs in boxes.items():
        if split == "test" and not test:
            continue
        for i, b in enumerate(bxs):
            hr = im.crop(b)
            (root / split / "HR").mkdir(parents=True, exist_ok=True)
            hr.save(root / split / "HR" / f"{split}{i}.png")
            if with_lr:
                (root / split / "LR").mkdir(parents=True, exist_ok=True)
                lr = hr.resize((hr.width // scale, hr.height // scale), Image.Resampling.BICUBIC)
                lr.save(root / split / "LR" / f"{split}{i}x{scale}.png")
    return root


def run_without_torch(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -c ...`` with a ``torch`` module on sys.path that fails to import."""
    block = tmp_path / "_block_torch"
    block.mkdir(exist_ok=True)
    (block / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(block), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)


def implicit_pair(folder: Path, stem: str = "fake_ciao", d: int = 2) -> Path:
    """A stand-in CiaoSR encoder/decoder pair (contract C): the decoder samples ``lr`` bilinearly at ``coord``.

    encoder: lr -> feat_k (N, 9d, H, W), feat_v (N, 10d, H, W) (1x1 convs of lr);
    decoder: (feat_k, feat_v, lr, coord (N,Q,2) row/col in [-1,1], cell) -> rgb (N, Q, 3).
    """
    rng = np.random.default_rng(0)
    enc = helper.make_graph(
        [helper.make_node("Conv", ["lr", "wk"], ["feat_k"]), helper.make_node("Conv", ["lr", "wv"], ["feat_v"])],
        "encoder",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("feat_k", TensorProto.FLOAT, ["N", 9 * d, "H", "W"]),
         helper.make_tensor_value_info("feat_v", TensorProto.FLOAT, ["N", 10 * d, "H", "W"])],
        [numpy_helper.from_array(rng.standard_normal((9 * d, 3, 1, 1)).astype(np.float32), "wk"),
         numpy_helper.from_array(rng.standard_normal((10 * d, 3, 1, 1)).astype(np.float32), "wv")],
    )
    dec = helper.make_graph(
        [helper.make_node("Gather", ["coord", "xy"], ["grid_q"], axis=2),  # (row, col) -> (x, y)
         helper.make_node("Unsqueeze", ["grid_q", "ax1"], ["grid"]),  # (N, 1, Q, 2)
         helper.make_node("GridSample", ["lr", "grid"], ["s"], align_corners=0, mode="linear",
                          padding_mode="border"),
         helper.make_node("Squeeze", ["s", "ax2"], ["s3"]),  # (N, 3, Q)
         helper.make_node("Transpose", ["s3"], ["rgb"], perm=[0, 2, 1])],
        "decoder",
        [helper.make_tensor_value_info("feat_k", TensorProto.FLOAT, ["N", 9 * d, "H", "W"]),
         helper.make_tensor_value_info("feat_v", TensorProto.FLOAT, ["N", 10 * d, "H", "W"]),
         helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("coord", TensorProto.FLOAT, ["N", "Q", 2]),
         helper.make_tensor_value_info("cell", TensorProto.FLOAT, ["N", "Q", 2])],
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["N", "Q", 3])],
        [numpy_helper.from_array(np.array([1, 0], np.int64), "xy"),
         numpy_helper.from_array(np.array([1], np.int64), "ax1"),
         numpy_helper.from_array(np.array([2], np.int64), "ax2")],
    )
    for role, g in (("encoder", enc), ("decoder", dec)):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        m.ir_version = 9
        for k, v in ArtifactRecord("fake_ciao", 4, graph=role).to_metadata().items():
            m.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(m)
        onnx.save(m, str(folder / f"{stem}.{role}.onnx"))
    return folder / f"{stem}.encoder.onnx"
