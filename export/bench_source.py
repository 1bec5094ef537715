"""``sr-bench --model NAME``: the torch side of benchmarking a registered model.

The runtime measures artifacts and never imports the exporter or the models; a registered
model is turned into something it can measure here, then handed to
:func:`srdeploy.runtime.bench.run_bench` as a :class:`~srdeploy.runtime.bench.ModelSource`:

* any backend that runs ONNX/engines: the model is exported with :func:`export_model` (fp32 or
  ``--precision fp16``) into ``--export-dir`` or a temporary folder, and that file is measured;
* a backend that runs in-memory modules (``torch``): the model is built and fused, and its
  statistics are counted the NTIRE way (fvcore MACs, Conv-hook activations).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from srdeploy.runtime import backends
from srdeploy.runtime.bench import BenchConfig, ModelSource, run_bench

from srdeploy.errors import MissingDependencyError, SrdeployError

from .config import ExportConfig


def run_bench_model(cfg: BenchConfig) -> dict[str, Any]:
    """:func:`run_bench` for ``cfg.model`` (a registered name); see the module docstring."""
    if not cfg.model:
        return run_bench(cfg)
    try:
        import torch  # noqa: F401 - the exporter and the models need it
    except ImportError as exc:
        raise MissingDependencyError(
            f"--model needs the exporter and PyTorch ({exc}); pip install 'srdeploy[export]', or pass --onnx FILE"
        ) from exc
    if cfg.scale is None:
        raise SrdeployError("--model needs --scale")
    precision = cfg.precision or "fp32"
    info = backends.backend(cfg.backend) if cfg.backend else backends.default_backend("onnx")
    if "module" in info.accepts:
        if precision != "fp32":
            raise SrdeployError(f"--backend {info.name} measures fp32 eager models (as the NTIRE harness); "
                                "drop --precision")
        return run_bench(cfg, module_source(cfg, info.name, cfg.log.append))
    with tempfile.TemporaryDirectory(prefix="srbench-") as tmp:
        out = Path(cfg.export_dir) if cfg.export_dir else Path(tmp)
        cfg.log.append(f"exporting {cfg.model} x{cfg.scale} ({precision}) into {out}")
        from .api import export_model

        result = export_model(ExportConfig(model=cfg.model, scale=cfg.scale, outdir=str(out), weights=cfg.weights,
                                           fp16=precision == "fp16"))
        return run_bench(cfg, ModelSource(path=str(result.onnx_path)))


def module_source(cfg: BenchConfig, backend: str, log: Callable[[str], None]) -> ModelSource:
    """Build and fuse ``cfg.model`` for an in-memory backend, with its NTIRE-convention statistics."""
    from srdeploy.models.fusion import fuse_model
    from srdeploy.runtime.backends import RunOptions
    from srdeploy.runtime.predict import module_predictor

    from srdeploy import models

    from .torch_stats import fvcore_gmacs, torch_activations

    assert cfg.model is not None and cfg.scale is not None
    m = models.build(cfg.model, cfg.scale, cfg.weights)
    fuse_model(m)
    hw = (cfg.flops_size.h, cfg.flops_size.w)
    stats: dict[str, Any] = {"params": sum(p.numel() for p in m.parameters()), "input_shape": str(cfg.flops_size)}
    try:
        stats["gmacs"] = fvcore_gmacs(m, hw)
        stats["flops_tool"] = "fvcore FlopCountAnalysis (NTIRE convention)"
    except MissingDependencyError as exc:
        log(f"FLOPs: not counted ({exc})")
    stats["activations"], stats["num_conv"] = torch_activations(m, hw)
    opts = RunOptions(device=cfg.device, cudnn_benchmark=cfg.mode == "steady")
    return ModelSource(predictor=module_predictor(m, cfg.scale, backend, opts),
                       key=f"{cfg.model}_x{cfg.scale}_{backend}", random_weights=cfg.weights is None, stats=stats)
