"""Graph -> Graph passes, one per module."""

from ...host.graph import Graph


def frontend_cleanup(graph: Graph) -> Graph:
    """Passes that run right after the front end, in order."""
    return graph
