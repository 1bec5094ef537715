"""The one-way dependency rule (docs/design.md): runtime/ and the core never import the exporter,
the models or torch; only the optional torch backend may import torch, lazily; the CLIs import the
torch side lazily (inside the functions of the commands that need it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("srdeploy.export", "srdeploy.models", "torch")

#: file (relative to the repo) -> modules it may import lazily (inside a function), never at module level
LAZY_ALLOWED: dict[str, tuple[str, ...]] = {
    "runtime/backends/torch.py": ("torch",),
    # the command-line entry points: --model / sr-export need the torch side, imported on use
    "srdeploy/cli/export.py": FORBIDDEN,
    "srdeploy/cli/upscale.py": FORBIDDEN,
    "srdeploy/cli/bench.py": FORBIDDEN,
    "srdeploy/cli/weights.py": FORBIDDEN,
}


def _forbidden(name: str) -> str | None:
    for f in FORBIDDEN:
        if name == f or name.startswith(f + "."):
            return f
    return None


def violations(source: str, filename: str, lazy_ok: tuple[str, ...] = ()) -> list[str]:
    """Every import of a forbidden module in ``source``: ``file:line: module (where)``."""
    tree = ast.parse(source, filename)
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            elif (isinstance(child, ast.Call) and getattr(child.func, "attr", getattr(child.func, "id", "")) ==
                  "import_module" and child.args and isinstance(child.args[0], ast.Constant)):
                names = [str(child.args[0].value)]
            for name in names:
                f = _forbidden(name)
                if f is not None and not (inside and f in lazy_ok):
                    where = "in a function" if inside else "at module level"
                    found.append(f"{filename}:{child.lineno}: {name} ({where})")
                    break
            visit(child, inside)

    visit(tree, False)
    return found


def _checked_files() -> list[Path]:
    files = sorted((REPO / "runtime").rglob("*.py"))
    files += sorted((REPO / "srdeploy").rglob("*.py"))
    return files


def test_runtime_and_core_never_import_export_models_or_torch() -> None:
    bad: list[str] = []
    for path in _checked_files():
        rel = path.relative_to(REPO).as_posix()
        bad += violations(path.read_text(), rel, LAZY_ALLOWED.get(rel, ()))
    assert not bad, "imports against the dependency rule:\n" + "\n".join(bad)


def test_the_checker_flags_lazy_imports_in_runtime() -> None:
    # the shape of the old runtime/bench.py: the --model glue importing the models lazily
    old_bench = (
        "import importlib\n"
        "def _torch_path(cfg):\n"
        "    from srdeploy import models\n"
        "    from srdeploy.models.fusion import fuse_model\n"
        "def export_for_bench():\n"
        "    return importlib.import_module('srdeploy.export')\n"
    )
    found = violations(old_bench, "runtime/bench.py")
    assert [f.split(":")[1] for f in found] == ["3", "4", "6"], found
    assert violations("import torch\n", "runtime/backends/torch.py", ("torch",)) == [
        "runtime/backends/torch.py:1: torch (at module level)"
    ]
    assert violations("def f():\n    import torch\n", "runtime/backends/torch.py", ("torch",)) == []


def test_importing_every_runtime_and_core_module_loads_no_torch() -> None:
    mods = []
    for path in _checked_files():
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[0] == "runtime":
            parts[0] = "srdeploy.runtime"
        if parts[-1] == "__init__":
            parts.pop()
        mods.append(".".join(parts))
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'srdeploy.models', "
        "'srdeploy.export')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
