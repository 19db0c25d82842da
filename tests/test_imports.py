"""The package imports cleanly, module by module, with no import cycle and no lazy import that
hides one.

1. Every module of ``spectra`` and ``spectra_cli`` is imported first, on its own, with no other
   spectra module loaded before it (a fresh interpreter; between modules every ``spectra*``
   entry is removed from ``sys.modules``, so third-party packages are loaded once). A cycle
   shows as an ``ImportError`` ("partially initialized module") for whichever module of the
   cycle is imported first, so every entry point is tried.
2. No function in ``spectra/`` imports a spectra module (``import spectra…`` /
   ``from spectra… import``) unless the import is documented, on its line or in a comment at
   most two lines above it, with ``# lazy: <reason>`` or as an ``optional dependency``: the
   accepted reasons are an optional extra (transformers, peft, pandas, huggingface_hub) or a
   heavy start-up the caller may never need, never a cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"spectra": ROOT / "spectra", "spectra_cli": ROOT / "cli" / "spectra_cli"}
LAZY_MARKS = ("# lazy:", "optional dependenc")

_CHILD = r"""
import importlib, json, sys
results = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("spectra", "spectra_cli")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        # an optional dependency that is not installed is no cycle; a spectra module is
        missing = (e.name or "").split(".")[0]
        results[name] = None if missing not in ("spectra", "spectra_cli") else repr(e)
    except Exception as e:  # report every failure, not only the first
        results[name] = f"{type(e).__name__}: {e}"
    else:
        results[name] = ""
print(json.dumps(results))
"""


def _module_names() -> list[str]:
    names = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[-1] != "__main__":
                names.append(".".join(parts))
    return names


def test_every_module_imports_first_without_a_cycle() -> None:
    names = _module_names()
    assert "spectra.loaders.align" in names and "spectra_cli.app" in names
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(names)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    failures = {name: error for name, error in results.items() if error}
    assert failures == {}
    imported = [name for name, error in results.items() if error == ""]
    assert len(imported) >= len(names) // 2  # most modules need no optional extra


def _function_level_spectra_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each import of a spectra module inside a function of ``path``, that is
    not documented with one of :data:`LAZY_MARKS`."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            if not any(m.split(".")[0] in PACKAGES for m in modules):
                continue
            # two lines above, then the import itself
            span = lines[max(node.lineno - 3, 0) : node.end_lineno]
            if not any(mark in line for line in span for mark in LAZY_MARKS):
                found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def test_no_undocumented_function_level_spectra_import() -> None:
    offenders = {
        str(path.relative_to(ROOT)): hits
        for path in sorted(PACKAGES["spectra"].rglob("*.py"))
        if (hits := _function_level_spectra_imports(path))
    }
    assert offenders == {}


def test_the_scan_sees_a_lazy_import(tmp_path: Path) -> None:
    """The scanner itself: it flags an undocumented import and accepts a documented one."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n"
        "    from spectra.loaders import full\n"
        "    return full\n"
        "\n"
        "\n"
        "def g():\n"
        "    # lazy: matplotlib start-up, only when drawing\n"
        "    from spectra.plots import all_figures\n"
        "    import torch\n"
        "    return all_figures, torch\n",
        encoding="utf-8",
    )
    assert _function_level_spectra_imports(sample) == [(2, "from spectra.loaders import full")]
