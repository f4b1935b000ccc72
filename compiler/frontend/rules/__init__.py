"""Pattern rules, one family per module, in priority order: fusions first, then one-to-one lowerings."""

from . import functions, primitive, rope

ALL_RULES = [*functions.RULES, *rope.RULES, *primitive.RULES]
