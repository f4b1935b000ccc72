"""Calibration: the range of every tensor on sample inputs.

onnxruntime runs the static ONNX model on each sample with every tensor the IR shares with it exposed as an
output; tensors the IR made itself (fused intermediates) come from the IR float executor, which equals
onnxruntime to 1e-4 (the front-end check). Recorded per tensor: max |x| over all samples (masked softmax
inputs only over kept keys).

Samples are an .npz keyed by the model's input names, each (N, ...) with N >= 1 samples (integer inputs hold
integers, token ids within the embedding table; float inputs finite values: an empty or NaN set would calibrate
every range to 0 and saturate the design, so it is refused); without one, a documented
synthetic set is used: token ids uniform in [0, min(vocab, 30000)), attention masks of random lengths
(at least a quarter of the sequence kept, right padding), floats standard normal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...host import reference
from ...host.graph import Graph
from ..errors import UserError
from ..validate import check_samples

SYNTHETIC_SAMPLES = 16


def synthetic_samples(graph: Graph, n: int = SYNTHETIC_SAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = int(graph.meta.get("vocab") or 1000)
    out = {}
    masks = {l.inputs[0] for l in graph.layers if l.op == "PaddingMask" and l.inputs}  # by meaning, not name
    for name in graph.inputs:
        t = graph.tensors[name]
        shape = (n, *t.shape)
        if name in masks and t.dtype != "float32":
            length = t.shape[-1]
            keep = rng.integers(max(1, length // 4), length + 1, size=n)
            mask = (np.arange(length)[None, :] < keep[:, None]).astype(np.int64)
            out[name] = mask.reshape(shape)
        elif t.dtype == "int64":
            out[name] = rng.integers(0, min(vocab, 30000), size=shape)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


# Verification and calibration use at most this many samples (a large --inputs file kept verify busy for
# minutes per sample), and read at most SAMPLE_FILE_BYTES from the file.
MAX_SAMPLES = 64
SAMPLE_FILE_BYTES = 1 << 30


def _check_npz_size(path: Path, graph: Graph, limit: int) -> None:
    """Refuse an .npz whose members would decompress to more than ``limit`` bytes, from the zip directory and
    each member's .npy header (the shape it claims), before anything is decompressed or allocated."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # np.load reports what it is below
    total = 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            claimed = 0
            try:
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            except Exception:
                pass  # not an .npy member: np.load reports it
            total += max(info.file_size, claimed)
    if total > limit:
        raise UserError(f"{path} would take {total / 2**20:,.0f} MiB once decompressed, more than the "
                        f"{limit / 2**20:,.0f} MiB fpgaformer reads from a samples file; verify and calibration use "
                        f"at most {MAX_SAMPLES} samples, so save only those (e.g. arrays[:{MAX_SAMPLES}]).")


def load_samples(path: str | Path, graph: Graph, limit: int | None = MAX_SAMPLES) -> dict[str, np.ndarray]:
    """Read calibration/input samples from .npz and check names and shapes against the graph.

    Only the first ``limit`` samples are kept (a note on stderr says how many of how many); a file that would
    decompress to more than SAMPLE_FILE_BYTES is refused before it is read."""
    path = Path(path)
    try:
        if path.is_file():
            _check_npz_size(path, graph, SAMPLE_FILE_BYTES)
    except UserError:
        raise
    except Exception:
        pass  # unreadable: np.load below says so
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(f"cannot read samples from {path} ({type(e).__name__}: {e}); give an .npz file with one "
                        f"array per model input: {', '.join(graph.inputs)}.") from None
    missing = [n for n in graph.inputs if n not in data]
    unknown = [n for n in data if n not in graph.inputs]
    if missing or unknown:
        raise UserError(f"{path}: arrays {sorted(data)} do not match the model inputs {graph.inputs} "
                        f"(missing: {missing or 'none'}; unknown: {unknown or 'none'}). Name each array after "
                        "a model input.")
    count = None
    for name in graph.inputs:
        want = graph.tensors[name].shape
        got = data[name].shape
        if got == want:
            data[name] = data[name][None]
            got = data[name].shape
        if got[1:] != want:
            raise UserError(f"{path}: array {name!r} has shape {got}; the model expects (N, "
                            f"{', '.join(map(str, want))}) for N samples (compiled with this sequence length).")
        count = got[0] if count is None else count
        if got[0] != count:
            raise UserError(f"{path}: arrays hold different numbers of samples ({count} vs {got[0]} in {name!r}).")
    if limit is not None and count is not None and count > limit:
        import sys

        from ..validate import plain
        print(f"note: using the first {limit} of the {count} samples in {plain(str(path))} (at most {limit} are "
              "used).", file=sys.stderr)
        data = {k: v[:limit] for k, v in data.items()}
    check_samples(data, graph, path)  # N >= 1; integer ids within the vocabulary; finite floats
    return data


def calibrate(graph: Graph, samples: dict[str, np.ndarray], model=None) -> dict[str, float]:
    """max |x| per float tensor over the samples (onnxruntime where the tensor exists in ``model``)."""
    from ..compare import OrtProbe

    names = [o for l in graph.layers for o in l.outputs if graph.tensors[o].dtype == "float32"]
    ranges = {n: 0.0 for n in names + [i for i in graph.inputs if graph.tensors[i].dtype == "float32"]}
    softmax_masks = {l.inputs[0]: l.inputs[1] for l in graph.layers if l.op == "Softmax" and len(l.inputs) > 1}
    count = check_samples(samples, graph, "the calibration samples")  # an empty or NaN set calibrates nothing
    probe = OrtProbe(model, names) if model is not None else None
    for i in range(count):
        feeds = {k: v[i] for k, v in samples.items()}
        values = reference.run(graph, feeds)
        if probe is not None:
            values.update(probe.run(feeds))
        for name in ranges:
            v = np.asarray(values[name], dtype=np.float64)
            if name in softmax_masks:
                keep = values[softmax_masks[name]]
                keep = keep if keep.dtype == bool else keep == 0
                v = np.where(np.broadcast_to(keep, v.shape), v, 0.0)
            ranges[name] = max(ranges[name], float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)))
    return ranges
