"""Build the native plugin code (CMake + nvcc) and fetch pinned TensorRT headers.

CI has no TensorRT install, so the plugin library is compiled against NVIDIA's TensorRT 10.14
headers shipped in the pinned registry package ``kernel-lens==2.0.1`` (downloaded with
``pip download --no-deps`` into a cache folder, verified by sha256, unzipped; nothing installed).
On a real TensorRT machine pass ``tensorrt_root`` (or ``-DTensorRT_ROOT`` to CMake) instead.

    python -m srdeploy.plugins.build [BUILD_DIR] [--archs 87;89;90] [--tensorrt-root DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from srdeploy.cache import cache_dir, sha256_file
from srdeploy.errors import BackendError

KERNEL_LENS_VERSION = "2.0.1"
KERNEL_LENS_SHA256 = "07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0"
KERNEL_LENS_WHEEL = f"kernel_lens-{KERNEL_LENS_VERSION}-py3-none-any.whl"
DEFAULT_ARCHS = "87;89;90"
REPO_ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = {
    "kernels": "libsrdeploy_kernels.so",
    "plugins": "libsrdeploy_plugins.so",
    "plugins_static": "libsrdeploy_plugins_static.so",
    "harness": "libsrdeploy_plugin_harness.so",
}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise concurrent builds/downloads into one folder (parallel test sessions share it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".srdeploy.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_cache_dir() -> Path:
    """``headers/`` of the project cache (:func:`srdeploy.cache.cache_dir`)."""
    return cache_dir("headers")


def tensorrt_headers(cache_dir: Path | None = None) -> Path:
    """Folder holding NvInferRuntime.h from the pinned, sha256-verified kernel-lens wheel."""
    cache = (cache_dir or default_cache_dir()) / f"kernel-lens-{KERNEL_LENS_VERSION}"
    with _locked(cache):
        return _fetch_headers(cache)


def _fetch_headers(cache: Path) -> Path:
    include = cache / "x" / "kernel_lens" / "include" / "tensorrt"
    if (include / "NvInferRuntime.h").is_file() and (cache / "VERIFIED").is_file():
        return include
    wheel = cache / KERNEL_LENS_WHEEL
    if not wheel.is_file():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             f"kernel-lens=={KERNEL_LENS_VERSION}", "-d", str(cache)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not wheel.is_file():
            raise BackendError(
                f"could not download kernel-lens=={KERNEL_LENS_VERSION} for the TensorRT headers "
                f"({proc.stderr.strip().splitlines()[-1:] or 'no wheel'}); check PyPI access or pass a TensorRT root"
            )
    digest = sha256_file(wheel)
    if digest != KERNEL_LENS_SHA256:
        wheel.unlink()
        raise BackendError(
            f"kernel-lens wheel sha256 {digest} != pinned {KERNEL_LENS_SHA256}; refusing to use its headers"
        )
    with zipfile.ZipFile(wheel) as z:
        members = [m for m in z.namelist() if m.startswith("kernel_lens/include/tensorrt/")]
        z.extractall(cache / "x", members)
    if not (include / "NvInferRuntime.h").is_file():
        raise BackendError(f"kernel-lens {KERNEL_LENS_VERSION} has no TensorRT headers at {include}")
    (cache / "VERIFIED").write_text(digest + "\n")
    return include


def tools_missing() -> str | None:
    """Why the native build cannot run here (None when cmake and nvcc are available)."""
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    return None


def build_native(
    build_dir: Path,
    *,
    archs: str = DEFAULT_ARCHS,
    tensorrt_include: Path | None = None,
    jobs: int = 2,
    asan: bool = False,
) -> Path:
    """Configure and build the top-level CMakeLists.txt into ``build_dir``; return it.

    CMake's own dependency tracking makes a rebuild of an up-to-date tree a few seconds.
    """
    missing = tools_missing()
    if missing:
        raise BackendError(f"cannot build the plugins: {missing}; install CUDA (nvcc) and CMake >= 3.22")
    include = tensorrt_include or tensorrt_headers()
    with _locked(build_dir):
        _cmake(build_dir, archs, include, jobs, asan)
    return build_dir


def _cmake(build_dir: Path, archs: str, include: Path, jobs: int, asan: bool) -> None:
    nvcc = shutil.which("nvcc")
    configure = [
        "cmake", "-S", str(REPO_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_CUDA_ARCHITECTURES={archs}", f"-DTensorRT_ROOT={include}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
        f"-DSRDEPLOY_ASAN={'ON' if asan else 'OFF'}",
    ]  # fmt: skip
    for cmd in (configure, ["cmake", "--build", str(build_dir), "-j", str(jobs)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = (proc.stdout + proc.stderr).strip().splitlines()
            raise BackendError(f"`{' '.join(cmd[:3])} ...` failed: " + " | ".join(log[-12:]))


def library(build_dir: Path, name: str) -> Path:
    """Path of one built library (``kernels``, ``plugins``, ``plugins_static``, ``harness``)."""
    path = build_dir / LIBRARIES[name]
    if not path.is_file():
        raise BackendError(f"{path} is missing; build it with: python -m srdeploy.plugins.build {build_dir}")
    return path


# The C entry points' signatures (plugins/csrc/kernels_capi.cpp, plugin_harness.cpp), written once for
# every ctypes caller: window_attention(ioType, q, k, v, table, tableType, out, batchWindows, heads,
# window, headDim, scale, biasQMinusK, stream); local_ensemble(ioType, query, keys, values, out, nQueries,
# c1, c2, stream)
_WINDOW_ATTENTION_ARGS = [
    ctypes.c_int32,
    *[ctypes.c_void_p] * 4,
    ctypes.c_int32,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int32,
    ctypes.c_int32,
    ctypes.c_int32,
    ctypes.c_float,
    ctypes.c_int32,
    ctypes.c_void_p,
]
_LOCAL_ENSEMBLE_ARGS = [ctypes.c_int32, *[ctypes.c_void_p] * 4, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
                        ctypes.c_void_p]


def load_launchers(build_dir: Path, name: str = "kernels") -> ctypes.CDLL:
    """Load the ``kernels`` (``srdeploy_*``) or ``harness`` (``srdeploy_harness_*``) library with the
    launchers' ctypes signatures set (both return an int32 status, 0 on success)."""
    lib = ctypes.CDLL(str(library(build_dir, name)))
    prefix = "srdeploy_harness_" if name == "harness" else "srdeploy_"
    for op, args in (("window_attention", _WINDOW_ATTENTION_ARGS), ("local_ensemble", _LOCAL_ENSEMBLE_ARGS)):
        fn = getattr(lib, prefix + op)
        fn.argtypes = args
        fn.restype = ctypes.c_int32
    return lib


def libraries_for_gpu(build_dir: str | Path | None, arch: str, *, no_build: bool = False) -> Path:
    """Build folder for the GPU scripts in benchmarks/ (the machine with the GPU may lack nvcc,
    cmake or network access).

    * ``no_build``: use ``build_dir`` (default build/plugins) as it is;
    * nvcc and cmake present: build for ``arch`` only (e.g. "90") into ``build_dir``
      (default build/plugins-sm<arch>); TensorRT headers from ``$SRDEPLOY_CACHE`` / the pinned wheel;
    * otherwise: use the prebuilt build/plugins (its default architectures include 87, 89 and 90).
    """
    if no_build or tools_missing() is not None:
        folder = Path(build_dir) if build_dir else REPO_ROOT / "build" / "plugins"
        for name in ("kernels", "harness"):
            library(folder, name)  # raises with the build command when missing
        return folder
    folder = Path(build_dir) if build_dir else REPO_ROOT / "build" / f"plugins-sm{arch}"
    return build_native(folder, archs=arch)


def trtexec_plugin_flags(library: str | Path = "libsrdeploy_plugins.so") -> list[str]:
    """trtexec flags that load the getCreators variant (for manifests' trtexec commands).

    ``--dynamicPlugins`` takes the getCreators library only, never the ``_static`` variant.
    """
    name = Path(library).name
    if name.startswith("libsrdeploy_plugins_static"):
        raise BackendError(f"{name} is the static-registration variant; trtexec needs libsrdeploy_plugins.so")
    return [f"--dynamicPlugins={library}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m srdeploy.plugins.build", description=__doc__.split("\n")[0])
    ap.add_argument("build_dir", nargs="?", default=str(REPO_ROOT / "build" / "plugins"))
    ap.add_argument("--archs", default=DEFAULT_ARCHS, help="CMAKE_CUDA_ARCHITECTURES (default %(default)s)")
    ap.add_argument("--tensorrt-root", default=None, help="TensorRT include dir (default: pinned kernel-lens headers)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    include = Path(args.tensorrt_root) if args.tensorrt_root else None
    out = build_native(Path(args.build_dir), archs=args.archs, tensorrt_include=include, jobs=args.jobs)
    for name in LIBRARIES.values():
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
