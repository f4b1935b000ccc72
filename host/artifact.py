"""Build artifacts on disk: ``BUILD/manifest.json`` (readable graph) + ``BUILD/weights.npz`` (no pickle).

Writes are atomic at the directory level: everything goes to a temporary sibling directory that is renamed
into place only when complete, so an interrupted or failed compile never leaves a BUILD that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .graph import Graph

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
FORMAT_VERSION = 1


class ArtifactError(Exception):
    """A BUILD directory that is missing, incomplete or from an incompatible version."""


def weights_checksum(weights: dict[str, np.ndarray]) -> str:
    """sha256 over the sorted parameter names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for key in sorted(weights):
        arr = np.ascontiguousarray(weights[key])
        h.update(key.encode())
        h.update(str(arr.shape).encode() + str(arr.dtype).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; on success it replaces ``final`` atomically.

    On any exception the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_graph(directory: Path, graph: Graph) -> None:
    """Write manifest.json and weights.npz of ``graph`` into ``directory`` (which must be a staging dir)."""
    directory = Path(directory)
    weights = graph.weights()
    manifest = {"format": "fpgaformer-artifact", "version": FORMAT_VERSION,
                "weights_sha256": weights_checksum(weights), "graph": graph.to_json()}
    np.savez(directory / WEIGHTS, **weights)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, default=json_default))


def save_artifact(directory: Path, graph: Graph) -> None:
    """Write a complete artifact to ``directory`` atomically (replacing an older one)."""
    with staged_directory(Path(directory)) as tmp:
        write_graph(tmp, graph)


def read_versioned_json(path: Path, fmt: str, version_key: str, version: int, error: type[Exception],
                        missing: str, redo: str) -> dict:
    """A JSON file written by fpgaformer: present, parseable, of format ``fmt`` and our ``version``.

    Raises ``error`` with what is wrong and ``redo`` (what to do); ``missing`` explains an absent file."""
    if not path.is_file():
        raise error(missing)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}); {redo}.") from None
    if data.get("format") != fmt or data.get(version_key) != version:
        raise error(f"{path} has format {data.get('format')!r} version {data.get(version_key)!r}; this "
                    f"fpgaformer reads {fmt} version {version}. {redo[:1].upper() + redo[1:]}.")
    return data


def load_manifest(directory: Path) -> dict:
    return read_versioned_json(
        Path(directory) / MANIFEST, "fpgaformer-artifact", "version", FORMAT_VERSION, ArtifactError,
        missing=f"{directory} is not a fpgaformer build: {MANIFEST} is missing. "
                f"Create it with `fpgaformer compile MODEL.onnx -o {directory}`.",
        redo="recompile the model")


def load_artifact(directory: Path) -> tuple[Graph, dict]:
    """Read BUILD back; checks the weights against the manifest's checksum. Returns (graph, manifest)."""
    manifest = load_manifest(directory)
    wpath = Path(directory) / WEIGHTS
    if not wpath.is_file():
        raise ArtifactError(f"{wpath} is missing; recompile the model.")
    with np.load(wpath, allow_pickle=False) as npz:
        weights = {k: npz[k] for k in npz.files}
    if weights_checksum(weights) != manifest["weights_sha256"]:
        raise ArtifactError(f"{wpath} does not match the checksum in {MANIFEST}: the build is corrupt or was "
                            "edited. Recompile the model.")
    return Graph.from_json(manifest["graph"], weights), manifest


def json_default(value):
    """json.dumps default for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
