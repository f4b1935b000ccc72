"""Pattern rules, one family per module, in priority order: fusions first, then one-to-one lowerings."""

from . import contrib_attention, embed_layernorm, functions, primitive, qdq, rope

ALL_RULES = [*qdq.RULES, *functions.RULES, *embed_layernorm.RULES, *contrib_attention.RULES, *rope.RULES, *primitive.RULES]
