"""Batch upscaling on a Ray cluster with Ray Data (``sr-upscale ... --ray [ADDRESS]``).

What Ray does for us: Ray Data turns the list of pending inputs into a dataset and streams it
through a ``map_batches`` stage backed by an actor pool (one actor per GPU with ``num_gpus=1``,
or one per N CPU cores), with backpressure, scheduling across nodes, and actor restarts / task
retries. We write no scheduler, queue or RPC of our own.

What we add around it:

* each actor opens the artifact once (ONNX Runtime or TensorRT, through
  :func:`srdeploy.runtime.predict.open_predictor`) and tiles inside the actor exactly as the
  single-process ``sr-upscale`` does, so the outputs are the same files;
* each output is written atomically, then a sidecar ``OUT/.srdeploy/NAME.json`` with the input's
  sha256, the artifact's sha256 and the options; a rerun skips outputs whose sidecar matches
  (resume after a killed worker or driver), and redoes outputs whose sidecar differs;
* one bad input does not stop the job: the actor records its one-line error, and the driver ends
  with ``done / skipped / failed`` and a non-zero exit when anything failed;
* progress: a bar over finished inputs on the driver.

The image files are read inside the actors, not with ``ray.data.read_images``: that reader fails
the whole dataset on one unreadable file and does not keep the alpha / 16-bit / grayscale facts
the single-process writer needs.

Torch-free: imports ray lazily and never imports srdeploy.models / srdeploy.export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srdeploy.atomic import atomic_write_text
from srdeploy.errors import MissingDependencyError, ShapeError, SrdeployError, one_line
from srdeploy.imageio import read_image, resize_plane, write_image
from srdeploy.inputs import output_name
from srdeploy.options import check_range
from srdeploy.tiling import Tiling, tiled_apply

SIDECAR_DIR = ".srdeploy"


class RayJobError(SrdeployError):
    """The Ray job stopped (a worker died without restarts left, the cluster went away)."""

    exit_code = 1


class FailedInputsError(SrdeployError):
    """Some inputs failed; the others were written."""

    exit_code = 1


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(f"--ray needs Ray Data ({exc}); pip install 'srdeploy[ray]'") from exc
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or (no address) a running local one, else start one.

    Returns True when this call started or joined (the caller then shuts down), False when Ray was
    already initialised in this process (tests, notebooks).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayJobError(f"cannot reach the Ray cluster at {address} ({exc}); check the address "
                              "(host:port of the head node's GCS, or ray://host:10001)") from exc
        return True
    try:
        ray.init(address="auto", **quiet)  # a cluster started on this machine with `ray start --head`
    except (ConnectionError, RuntimeError, ValueError):
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, _node_ip_address="127.0.0.1", **quiet)
    return True


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BatchOptions:
    """Everything an actor needs to produce the same file as ``sr-upscale`` on one process."""

    artifact: str
    backend: str  # onnxruntime | tensorrt
    outdir: str
    device: str = "cpu"
    plugin_library: str | None = None
    scale: int | None = None
    tile: int | None = None  # None: whole image
    tile_overlap: int = 16
    tile_blend: str = "crop"
    alpha: str = "upscale"
    max_pixels: int = 64_000_000
    suffix: str = ""
    intra_op_threads: int | None = None

    def __post_init__(self) -> None:  # the same bounds as sr-upscale's argparse types (srdeploy.options)
        check_range("tile", self.tile, 1)
        check_range("tile_overlap", self.tile_overlap, 0)
        check_range("max_pixels", self.max_pixels, 1)
        check_range("intra_op_threads", self.intra_op_threads, 1)
        if self.tile is not None:
            Tiling(self.tile, self.tile_overlap, self.tile_blend)  # type: ignore[arg-type]  # overlap < tile

    @property
    def tiling(self) -> Tiling | None:
        return None if self.tile is None else Tiling(self.tile, self.tile_overlap, self.tile_blend)  # type: ignore[arg-type]

    def fingerprint(self, artifact_sha: str) -> dict[str, Any]:
        """The options that change the output bytes (not where they go or how many threads)."""
        d = asdict(self)
        for k in ("artifact", "outdir", "intra_op_threads", "plugin_library", "device"):
            d.pop(k)
        d["artifact_sha256"] = artifact_sha
        return d


def artifact_sha256(path: str) -> str:
    """sha256 over the graph / engine file(s) the artifact runs."""
    from .artifact import open_artifact

    art = open_artifact(path)
    keys = sorted(k for k in art.files if k != "onnx" or "engine" not in art.files)
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode())
        h.update(file_sha256(art.files[k]).encode())
    return h.hexdigest()


def sidecar_of(dest: Path) -> Path:
    return dest.parent / SIDECAR_DIR / f"{dest.name}.json"


def sidecar_record(input_path: Path, input_sha: str, fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {"input": str(input_path), "input_sha256": input_sha, "options": fingerprint}


def is_done(dest: Path, input_sha: str, fingerprint: dict[str, Any]) -> bool:
    """True when ``dest`` exists and its sidecar records this input and these options."""
    side = sidecar_of(dest)
    if not (dest.is_file() and side.is_file()):
        return False
    try:
        rec = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(rec.get("input_sha256") == input_sha and rec.get("options") == fingerprint)


def upscale_one(predict: Any, scale: int, path: Path, dest: Path, tiling: Tiling | None, alpha: str,
                max_pixels: int) -> None:
    """One input to one output, the way the single-process ``sr-upscale`` writes it."""
    rgb, info = read_image(path, max_pixels=max_pixels)
    sr = tiled_apply(predict, rgb[None], scale, tiling)[0]
    if info.alpha is not None:
        alpha_plane = None if alpha == "drop" else resize_plane(info.alpha, sr.shape[1], sr.shape[2])
        info = type(info)(info.grayscale, info.bits, alpha_plane)
    write_image(dest, sr, info)


class Upscaler:
    """The Ray Data actor: opens the artifact once, then upscales one input per row."""

    def __init__(self, options: BatchOptions, artifact_sha: str) -> None:
        from .backends import RunOptions
        from .predict import open_predictor

        self.options = options
        run = RunOptions(device=options.device, threads=options.intra_op_threads, plugin_library=options.plugin_library)
        predictor, art = open_predictor(options.artifact, options.backend, run, options.scale)
        predictor.__enter__()
        self.predictor, self.min_size, self.model = predictor, art.min_size, art.model
        self.fingerprint = options.fingerprint(artifact_sha)

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ShapeError(f"input {h}x{w} is smaller than {self.model}'s minimum {self.min_size}x{self.min_size}")
        return self.predictor(batch)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        o = self.options
        status, errors, seconds = [], [], []
        for path_s, sha, dest_s in zip(batch["path"], batch["input_sha256"], batch["dest"], strict=True):
            t0 = time.perf_counter()
            path, dest = Path(str(path_s)), Path(str(dest_s))
            try:
                upscale_one(self._predict, int(self.predictor.scale), path, dest, o.tiling, o.alpha, o.max_pixels)
                atomic_write_text(sidecar_of(dest), json.dumps(sidecar_record(path, str(sha), self.fingerprint)))
                status.append("done")
                errors.append("")
            except Exception as exc:  # one bad input is recorded, the job goes on
                status.append("failed")
                msg = one_line(exc) or type(exc).__name__
                errors.append(msg if isinstance(exc, SrdeployError) else f"{type(exc).__name__}: {msg}")
            seconds.append(time.perf_counter() - t0)
        return {"path": batch["path"], "status": np.array(status), "error": np.array(errors),
                "seconds": np.array(seconds, dtype=np.float64), "pid": np.full(len(status), os.getpid())}


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    actor_pids: set[int] = field(default_factory=set)
    finished_at: list[float] = field(default_factory=list)  # driver perf_counter() as each row came back

    def steady_rate(self) -> float | None:
        """Inputs per second between the first and the last finished input (actor start excluded)."""
        if len(self.finished_at) < 2 or self.finished_at[-1] <= self.finished_at[0]:
            return None
        return (len(self.finished_at) - 1) / (self.finished_at[-1] - self.finished_at[0])

    def line(self) -> str:
        return (f"done {len(self.done)}, skipped {len(self.skipped)} (already up to date), "
                f"failed {len(self.failed)} in {self.seconds:.1f} s")


@dataclass(frozen=True)
class PoolOptions:
    """How many actors and what each reserves: ``num_gpus=1`` per actor on GPU clusters."""

    actors: int = 0  # 0: one per GPU (gpus_per_actor > 0) or per cpus_per_actor cores of the cluster
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    max_restarts: int | None = None  # None: Ray Data's default (restart dead actors, retry their rows)


def plan(inputs: Sequence[Path], options: BatchOptions, artifact_sha: str) -> tuple[list[dict[str, str]], list[str]]:
    """Split ``inputs`` into rows to run and outputs already up to date (skipped)."""
    fp = options.fingerprint(artifact_sha)
    todo, skipped = [], []
    for p in inputs:
        dest = Path(options.outdir) / output_name(p, options.suffix)
        sha = file_sha256(p)
        if is_done(dest, sha, fp):
            skipped.append(str(dest))
        else:
            todo.append({"path": str(p), "input_sha256": sha, "dest": str(dest)})
    return todo, skipped


def auto_actors(resources: dict[str, float], pool: PoolOptions) -> int:
    """One actor per GPU, or per ``cpus_per_actor`` CPUs, of the whole cluster (at least one)."""
    if pool.gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // pool.gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // max(pool.cpus_per_actor, 1e-6)))


def run_batch(inputs: Sequence[Path], options: BatchOptions, pool: PoolOptions, address: str | None = None,
              progress: bool = True) -> BatchSummary:
    """Upscale ``inputs`` on Ray; return the summary (the caller decides the exit code)."""
    ray = require_ray()
    from tqdm import tqdm

    t0 = time.perf_counter()
    sha = artifact_sha256(options.artifact)
    todo, skipped = plan(inputs, options, sha)
    summary = BatchSummary(skipped=skipped)
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary
    started = connect(address, num_cpus=None)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # our bar below counts finished inputs
        ctx.print_on_execution_start = False
        remote_args: dict[str, Any] = {}
        if pool.max_restarts is not None:
            remote_args["max_restarts"] = pool.max_restarts
            remote_args["max_task_retries"] = 0 if pool.max_restarts == 0 else -1
        actors = pool.actors or auto_actors(ray.cluster_resources(), pool)
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts only through **ray_remote_args (deprecated, no replacement yet)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                Upscaler,
                fn_constructor_args=(options, sha),
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(actors, len(todo))),
                num_cpus=pool.cpus_per_actor,
                num_gpus=pool.gpus_per_actor or None,
                **remote_args,
            )
        bar = tqdm(total=len(todo), desc="images (ray)", unit="img", disable=not progress, file=sys.stderr)
        try:
            for row in ds.iter_rows():
                summary.actor_pids.add(int(row["pid"]))
                summary.finished_at.append(time.perf_counter())
                if row["status"] == "done":
                    summary.done.append(str(row["path"]))
                else:
                    summary.failed[str(row["path"])] = str(row["error"])
                bar.update(1)
        except Exception as exc:
            if isinstance(exc, SrdeployError):
                raise
            first = one_line(exc)[:300]
            summary.seconds = time.perf_counter() - t0
            raise RayJobError(
                f"the Ray job stopped after {len(summary.done)} new outputs ({type(exc).__name__}: {first}); "
                "rerun the same command to resume: finished outputs are kept and skipped"
            ) from exc
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary
