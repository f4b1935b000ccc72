"""Partitioning (no g++ needed): block kernels chained on the host reproduce the whole-graph emulator, code for
code; the decoder-step partition has the documented ports."""

from __future__ import annotations

import numpy as np

from fpgaformer.compiler.partition import POSITION, decoder_step_partition, partition
from fpgaformer.host.emulator import Emulator


def test_block_partitions_chain_to_the_whole_graph(models):
    q = models.quantized("tiny_encoder", "w8a16")
    parts = partition(q)
    assert [p.name for p in parts] == [f"block{b}" for b in q.blocks()]
    whole = Emulator(q)
    for i in range(4):
        env = whole.run({k: v[i] for k, v in models.samples("tiny_encoder", 4).items()})
        for part in parts:
            assert part.graph.inputs[1:] == ["attention_mask"]  # the (1, seq) mask, not seq x seq flags
            out = Emulator(part.graph).run({n: env[n] for n in part.graph.inputs})
            for name in part.graph.outputs:
                assert np.array_equal(out[name], env[name])


def test_decoder_step_partition_ports(models):
    q = models.quantized("tiny_llama", "w8a16")
    part = decoder_step_partition(q, 0)
    g = part.graph
    assert g.tensors[g.inputs[0]].shape == (1, 1, 32)  # one token's residual row
    assert "attention_mask" in g.inputs and g.tensors["attention_mask"].shape == (1, part.context)
    assert POSITION in g.inputs and len(part.cache_points) == 2
    for tensor, axis in part.cache_points.items():
        assert g.tensors[f"{tensor}::cache"].shape[axis] == part.context
        assert g.tensors[tensor].shape[axis] == 1 and tensor in g.outputs
