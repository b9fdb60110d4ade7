"""Logical axis names, in one place.

Parameters and activations carry these names; `config.mesh.rules` maps them onto the
physical `(data, fsdp, tensor)` mesh axes. Activation names are separate from parameter
names so that, e.g., the batch can shard over `fsdp` while weights shard their embed
dimension over `fsdp` too (the maxtext convention).
"""

# Parameter axes.
VOCAB = "vocab"  # word-embedding rows / MLM decoder outputs
EMBED = "embed"  # hidden size, the residual stream
EMBED_OUT = "embed_out"  # second hidden-size axis of square (H, H) kernels
MLP = "mlp"  # feed-forward intermediate size
HEADS = "heads"  # attention heads
KV = "kv"  # per-head dimension
POSITION = "position"  # position-embedding rows
TOKEN_TYPE = "token_type"  # token-type-embedding rows
CLASSES = "classes"  # head outputs (NSP: 2)
LAYERS = "layers"  # stacked layers under nn.scan

# Activation axes.
ACT_BATCH = "act_batch"
ACT_LENGTH = "act_length"
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"
ACT_MLP = "act_mlp"

# (logical, mesh axes) pairs; the default for `config.mesh.rules`.
DEFAULT_RULES = (
  (VOCAB, "tensor"),
  (EMBED, "fsdp"),
  (EMBED_OUT, "tensor"),
  (MLP, "tensor"),
  (HEADS, "tensor"),
  (KV, None),
  (POSITION, None),
  (TOKEN_TYPE, None),
  (CLASSES, None),
  (LAYERS, None),
  (ACT_BATCH, ("data", "fsdp")),
  (ACT_LENGTH, None),
  (ACT_EMBED, None),
  (ACT_HEADS, "tensor"),
  (ACT_MLP, "tensor"),
)
