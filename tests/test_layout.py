"""Dependency rules: host imports with numpy alone; host never imports compiler."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_host_never_imports_compiler():
    for path in (ROOT / "host").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert "compiler" not in module, f"{path}: imports {module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert "compiler" not in alias.name, f"{path}: imports {alias.name}"


def test_host_imports_with_numpy_alone():
    """Import every host module with onnx, onnxruntime, hls4ml, pynq, torch and compiler blocked."""
    modules = sorted(p.stem for p in (ROOT / "host").glob("*.py") if p.stem != "__init__")
    code = f"""
import sys, importlib.abc
BLOCKED = ("onnx", "onnxruntime", "hls4ml", "pynq", "torch", "transformers", "fpgaformer.compiler",
           "matplotlib", "rich", "scipy")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import fpgaformer.host
for m in {modules!r}:
    importlib = __import__("importlib")
    importlib.import_module("fpgaformer.host." + m)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
