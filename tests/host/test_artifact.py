"""Artifact round trip, checksum, and atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaformer.host.artifact import ArtifactError, load_artifact, save_artifact, staged_directory
from fpgaformer.host.graph import Graph, Layer, Tensor


def small_graph():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    layers = [Layer("lin", "Linear", ["x"], ["y"], params={"weight": w, "bias": np.ones(3, np.float32)}, block=0,
                    role="ffn_up")]
    tensors = {"x": Tensor("x", (1, 2, 4)), "y": Tensor("y", (1, 2, 3))}
    return Graph(["x"], ["y"], tensors, layers, meta={"kind": "encoder"})


def test_round_trip(tmp_path):
    g = small_graph()
    save_artifact(tmp_path / "b", g)
    back, manifest = load_artifact(tmp_path / "b")
    assert back.to_json() == json.loads(json.dumps(g.to_json()))
    np.testing.assert_array_equal(back.layers[0].params["weight"], g.layers[0].params["weight"])
    assert manifest["version"] == 1


def test_edited_weights_are_refused(tmp_path):
    save_artifact(tmp_path / "b", small_graph())
    with np.load(tmp_path / "b" / "weights.npz") as z:
        data = {k: z[k] for k in z.files}
    data["lin/weight"][0, 0] += 1
    np.savez(tmp_path / "b" / "weights.npz", **data)
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(tmp_path / "b")


def test_missing_manifest_says_what_to_do(tmp_path):
    with pytest.raises(ArtifactError, match="fpgaformer compile"):
        load_artifact(tmp_path)


def test_failure_inside_staging_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_directory(tmp_path / "b") as d:
            (d / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
