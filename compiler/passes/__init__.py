"""Graph -> Graph passes, one per module."""

from ...host.graph import Graph
from .blocks import annotate_blocks
from .merge_bias import merge_bias


def frontend_cleanup(graph: Graph) -> Graph:
    """Passes that run right after the front end, in order."""
    graph = merge_bias(graph)
    graph = annotate_blocks(graph)
    return graph
