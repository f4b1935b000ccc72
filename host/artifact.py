"""Build artifacts on disk: ``BUILD/manifest.json`` (readable graph) + ``BUILD/weights.npz`` (no pickle).

Writes are atomic at the directory level: everything goes to a temporary sibling directory that is renamed
into place only when complete, so an interrupted or failed compile never leaves a BUILD that looks finished.

What may be replaced (`check_output`, the one rule every writer of a whole BUILD goes through): a path that does
not exist, an empty directory, or a BUILD fpgaformer wrote (a directory holding the marker file
``.fpgaformer-build`` and a readable ``manifest.json``) -- never a symbolic link, a file, another directory, or a
directory that holds the inputs of the compile. Writers inside an existing BUILD (``fpgaformer build``, ``verify``)
go through `check_no_symlinks` first, so a link planted in a BUILD cannot send a write outside it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .graph import Graph, GraphError, declared_params

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
FORMAT_VERSION = 1
BUILD_MARKER = ".fpgaformer-build"  # written into every BUILD: what `check_output` may replace
MARKER_TEXT = ("This folder is a BUILD written by fpgaformer. `fpgaformer compile -o` replaces it whole; "
               "a folder without this file is never replaced.\n")


class ArtifactError(Exception):
    """A BUILD directory that is missing, incomplete or from an incompatible version."""


class OutputError(ArtifactError):
    """An output path fpgaformer will not write (not its own BUILD, a link, holds the inputs) or lost a race."""


def weights_checksum(weights: dict[str, np.ndarray]) -> str:
    """sha256 over the sorted parameter names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for key in sorted(weights):
        arr = np.ascontiguousarray(weights[key])
        h.update(key.encode())
        h.update(str(arr.shape).encode() + str(arr.dtype).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _output_path(final: Path) -> Path:
    """``final`` made absolute with its parent folder resolved; the last component is kept as given (a link
    there is the link itself, never what it points to)."""
    final = Path(os.path.abspath(final))
    return final if final.name == "" else final.parent.resolve() / final.name


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_build(path: Path) -> bool:
    """``path`` is a directory (not a link) fpgaformer wrote: it holds the marker file and a ``manifest.json``
    of our format (any version: an older BUILD may be replaced)."""
    path = Path(path)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    if not (_regular_file(path / BUILD_MARKER) and _regular_file(path / MANIFEST)):
        return False
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == "fpgaformer-artifact"


def check_output(final: Path, inputs=()) -> Path:
    """The rule for replacing ``final`` with a new BUILD; returns the absolute path, or raises `OutputError`.

    Allowed: ``final`` does not exist, is an empty directory, or is a BUILD fpgaformer wrote (`is_build`).
    Refused: a symbolic link (its target would be lost), a file, any other directory, and a directory that
    holds one of ``inputs`` (the model file, its external data, ...)."""
    final = _output_path(final)
    redo = "Give -o a new folder name (or an empty folder)"
    if os.path.islink(final):
        raise OutputError(f"{final} is a symbolic link; fpgaformer does not write a BUILD through a link, because "
                          f"what it points to would be replaced. {redo}.")
    if not os.path.lexists(final):
        return final
    for item in inputs:
        for candidate in {Path(os.path.abspath(item)), Path(item).resolve()}:
            if candidate == final or final in candidate.parents:
                what = "is" if candidate == final else f"holds {candidate},"
                raise OutputError(f"{final} {what} an input of this compile; writing the BUILD there would delete "
                                  f"it, so nothing was written. {redo}.")
    try:
        if not stat.S_ISDIR(os.lstat(final).st_mode):
            raise OutputError(f"{final} exists and is a file, not a BUILD folder; fpgaformer replaces only BUILD "
                              f"folders it wrote, so nothing was written. {redo}, or remove the file yourself.")
        if not any(final.iterdir()) or is_build(final):
            return final
    except FileNotFoundError:  # moved away meanwhile (another writer of the same BUILD)
        return final
    if not os.path.lexists(final):
        return final
    raise OutputError(f"{final} is a folder that fpgaformer did not write (it lacks {BUILD_MARKER} with a "
                      f"readable {MANIFEST}); fpgaformer replaces only its own BUILD folders, so nothing was "
                      f"written. {redo}, or remove that folder yourself if you no longer need it (a BUILD from an "
                      f"fpgaformer older than this check has no marker either).")


def check_no_symlinks(root: Path, *paths: Path) -> None:
    """Refuse (`OutputError`) before writing ``paths`` inside the BUILD ``root`` when one of them, or a folder
    between ``root`` and it, is a symbolic link (or when a path is outside ``root``): a link planted in a BUILD
    must not send a write outside it."""
    root = Path(os.path.abspath(root))
    for path in paths:
        path = Path(os.path.abspath(path))
        if path != root and root not in path.parents:
            raise OutputError(f"refusing to write {path}: it is outside the BUILD {root}.")
        current = root
        for part in path.relative_to(root).parts:
            current = current / part
            if os.path.islink(current):
                raise OutputError(f"{current} is a symbolic link inside the BUILD {root}; fpgaformer writes only "
                                  "real files and folders of a BUILD and does not follow a link out of it. Remove "
                                  "the link and run the command again.")


@contextmanager
def staged_directory(final: Path, inputs=()) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; on success it replaces ``final`` atomically.

    ``final`` must pass `check_output` (checked on entry, so a long compile fails early, and again before the
    rename). On any exception the temporary directory is removed and ``final`` is left as it was. Concurrent
    writers of one BUILD use unique temporary names and atomic renames: one of them wins, the others raise
    `OutputError` saying so, and no ``.partial``/``.old`` directory is left behind.
    """
    final = check_output(final, inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
        (tmp / BUILD_MARKER).write_text(MARKER_TEXT)
        _commit(tmp, final, inputs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_RENAME_BLOCKED = (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


def _commit(tmp: Path, final: Path, inputs) -> None:
    """Rename ``tmp`` to ``final``: directly when ``final`` is absent or empty (rename(2) replaces an empty
    directory atomically), else by moving the old BUILD aside under a unique name first."""
    check_output(final, inputs)  # again: the folder may have changed while the compile ran
    try:
        os.rename(tmp, final)
        return
    except OSError as e:
        if e.errno not in _RENAME_BLOCKED:
            raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(final, old)
    except FileNotFoundError:  # another writer moved it aside first
        old = None
    try:
        if old is not None and not is_build(old):  # replaced by something else since the check: put it back
            os.rename(old, final)
            old = None
            check_output(final, inputs)  # raises with the reason
        try:
            os.rename(tmp, final)
        except OSError as e:
            if e.errno not in _RENAME_BLOCKED:
                raise
            raise OutputError(f"another fpgaformer wrote the BUILD {final} at the same time and finished first; "
                              "its BUILD was kept and this one discarded. Run this compile again if you want its "
                              "result there.") from None
    except BaseException:
        if old is not None and not os.path.lexists(final):
            os.rename(old, final)  # interrupted between the two renames: the old BUILD goes back
            old = None
        raise
    finally:
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
    """Write a complete artifact to ``directory`` atomically (replacing an older BUILD; see `check_output`)."""
    with staged_directory(Path(directory)) as tmp:
        write_graph(tmp, graph)


def read_versioned_json(path: Path, fmt: str, version_key: str, version: int, error: type[Exception],
                        missing: str, redo: str) -> dict:
    """A JSON file written by fpgaformer: present, parseable, of format ``fmt`` and our ``version``.

    Raises ``error`` with what is wrong and ``redo`` (what to do); ``missing`` explains an absent file."""
    if not path.is_file():
        raise error(missing)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text (byte {e.start}); the file is damaged. {redo[:1].upper() + redo[1:]}.") \
            from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise error(f"{path} is not valid JSON ({e}); {redo}.") from None
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror or e}); {redo}.") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__ if data is not None else 'null'}, not the object "
                    f"fpgaformer writes; the file is damaged. {redo[:1].upper() + redo[1:]}.")
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


REDO = "Recompile the model (`fpgaformer compile MODEL.onnx -o BUILD`) into this or a new BUILD."
NPY_HEADER_LIMIT = 1 << 16  # bytes of an .npy header (format 1.0 / 2.0 as np.savez writes them) we accept


def load_artifact(directory: Path) -> tuple[Graph, dict]:
    """Read BUILD back. Returns (graph, manifest). Everything is checked here, once: the manifest's structure,
    the weights file (a zip of .npy arrays as ``np.savez`` writes it: no pickles, each array read only after its
    header matched the shape and dtype the manifest declares, so a damaged or hostile file costs no more memory
    than the declared weights), the weights' checksum, and the graph (`Graph.from_json`). Any problem is an
    `ArtifactError` that says what is wrong; the rest of the code trusts what this returns."""
    manifest = load_manifest(directory)
    mpath = Path(directory) / MANIFEST
    checksum = manifest.get("weights_sha256")
    if not isinstance(checksum, str):
        raise ArtifactError(f"{mpath} has no weights checksum (weights_sha256); the file is damaged or was edited. "
                            f"{REDO}")
    if not isinstance(manifest.get("graph"), dict):
        raise ArtifactError(f"{mpath} holds no graph (the 'graph' object is missing or not an object); the file is "
                            f"damaged or was edited. {REDO}")
    try:
        declared = declared_params(manifest["graph"])
    except GraphError as e:
        raise ArtifactError(f"{mpath} is not a graph fpgaformer wrote: {e}. The file is damaged or was edited. "
                            f"{REDO}") from None
    wpath = Path(directory) / WEIGHTS
    if not wpath.is_file():
        raise ArtifactError(f"{wpath} is missing; recompile the model.")
    weights = read_weights(wpath, declared)
    if weights_checksum(weights) != checksum:
        raise ArtifactError(f"{wpath} does not match the checksum in {MANIFEST}: the build is corrupt or was "
                            "edited. Recompile the model.")
    try:
        graph = Graph.from_json(manifest["graph"], weights)
    except GraphError as e:
        raise ArtifactError(f"{Path(directory)} holds a graph fpgaformer cannot use: {e}. The BUILD is damaged or "
                            f"was edited. {REDO}") from None
    return graph, manifest


def read_weights(path: Path, declared: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (an .npz), each exactly as ``declared`` ({key: (shape, dtype)}); an ArtifactError
    for anything else: not a zip, a damaged member (CRC), an array missing, not declared, of another shape or
    dtype, holding objects (never unpickled), or larger than declared (checked before it is decompressed)."""
    damaged = f"{path} is damaged or is not the weights file fpgaformer wrote"
    weights: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else None
                if key is None or key not in declared:
                    raise ArtifactError(f"{damaged}: it holds {info.filename!r}, which is no parameter the manifest "
                                        f"declares. {REDO}")
                if key in weights:
                    raise ArtifactError(f"{damaged}: it holds {info.filename!r} twice. {REDO}")
                shape, dtype = declared[key]
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size > nbytes + NPY_HEADER_LIMIT:
                    raise ArtifactError(f"{damaged}: array {key!r} unpacks to {info.file_size:,} bytes, but the "
                                        f"manifest declares {dtype} {list(shape)} ({nbytes:,} bytes). {REDO}")
                with zf.open(info) as fh:
                    weights[key] = _read_npy(fh, key, shape, dtype, nbytes, damaged)
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as e:
        raise ArtifactError(f"{damaged} ({type(e).__name__}: {e}). {REDO}") from None
    missing = sorted(set(declared) - set(weights))
    if missing:
        raise ArtifactError(f"{damaged}: it lacks the parameter array(s) {', '.join(missing[:3])}"
                            f"{' and more' if len(missing) > 3 else ''} that the manifest declares. {REDO}")
    return weights


def _read_npy(fh, key: str, shape: tuple[int, ...], dtype: np.dtype, nbytes: int, damaged: str) -> np.ndarray:
    """One .npy member: its header must say ``dtype`` ``shape`` before any data is read."""
    from numpy.lib import format as npy

    version = npy.read_magic(fh)
    if version == (1, 0):
        header = npy.read_array_header_1_0(fh, max_header_size=NPY_HEADER_LIMIT)
    elif version == (2, 0):
        header = npy.read_array_header_2_0(fh, max_header_size=NPY_HEADER_LIMIT)
    else:
        raise ArtifactError(f"{damaged}: array {key!r} is in .npy format {version}, which fpgaformer does not "
                            f"write. {REDO}")
    got_shape, fortran, got_dtype = header
    if got_dtype.hasobject or tuple(got_shape) != shape or got_dtype != dtype:
        raise ArtifactError(f"{damaged}: array {key!r} is {got_dtype} {tuple(got_shape)}, but the manifest declares "
                            f"{dtype} {shape}{' (object arrays are never loaded)' if got_dtype.hasobject else ''}. "
                            f"{REDO}")
    data = fh.read()  # bounded: the member's size was checked against the declaration; reading to its end checks the CRC
    if len(data) != nbytes:
        raise ArtifactError(f"{damaged}: array {key!r} holds {len(data):,} bytes of data, {nbytes:,} expected. {REDO}")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T.copy() if fortran else array.reshape(shape).copy()


def json_default(value):
    """json.dumps default for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
