"""ModernBERT from scratch (Warner et al., 2024): base (L22/H768, 149M parameters) or large
(L28/H1024, 395M), trained at 1,024 tokens, then extended to 8,192.

    # phase 1: 1.719T tokens at sequence length 1024 (RoPE theta 10k everywhere)
    bert-jax pretrain --config configs/modernbert_base.py --workdir runs/mbert1024
    # phase 2: context extension, 300B tokens at 8192 (global RoPE theta 160k), from phase 1
    bert-jax pretrain --config configs/modernbert_base.py:phase2 --workdir runs/mbert8192 \\
        --config.init_from=runs/mbert1024
    bert-jax export-hf --workdir runs/mbert8192 --out hf/mbert   # ModernBertForMaskedLM
    # large: the argument names the size, the phase or both, e.g. :large or :large,phase2

The published recipe (the paper and AnswerDotAI/ModernBERT's
yamls/modernbert/modernbert-base-pretrain.yaml): MLM only with 30 % masking (80 / 10 / 10),
sequence packing (`data.packing`: no attention across documents), a byte-level BPE of
50,368 pieces, StableAdamW b1 0.9, b2 0.98, eps 1e-6, decoupled weight decay 1e-5 (not on
norms or biases), no dropout (embedding, MLP, attention probabilities), bf16 compute.
The learning rate is a trapezoid (warmup-stable-decay): phase 1 warms up over 3B tokens
(large: 2B) to 8e-4 (large: 5e-4) and stays there; phase 2 holds 3e-4 for 250B tokens,
then decays as 1 - sqrt to zero over the last 50B (`train.decay="wsd"`,
`decay_fraction=1/6`). Batches: 4,608 rows of 1,024 (large: 4,928), ~4.7M tokens a step;
phase 2 keeps ~4.7M tokens with 576 rows of 8,192.

Where bert_jax differs: AdamW with global-norm clipping (1.0) instead of StableAdamW's
update clipping; no batch-size warmup (the yaml ramps the batch over the first 50B
tokens); no dropout after the attention output (the yaml's attn_out_dropout_prob 0.1:
Hugging Face's one attention_dropout would also drop the probabilities). ModernBERT-large's
run was rolled back after 900B tokens and finished phase 1 at 5e-5 (rerun from step 178,350 with
--config.train.learning_rate=5e-5 to follow it); its phase-2 rate here, 5e-5, is our
choice (the paper states 3e-4 for the extension without a size). Not yet run by us at
this scale. Layers scanned (layer 0, then groups of local, local, global), phase 1 with
BERT-large's remat and phase 2 with full remat: `bert-jax compile` fits base's phase 1 on
v5e:16x16 (8.6 GiB peak per chip) and its phase 2 on v5e:8x8 (10.3 GiB; 576 rows need a
chip count that divides them); size other slices with it.
"""

from bert_jax import config as config_lib

# size: (preset, layers, hidden, GeGLU intermediate, rows a batch, phase-1 lr, warmup
# tokens, phase-2 lr); heads = hidden / 64.
SIZES = {
  "base": ("base", 22, 768, 1152, 4608, 8e-4, 3e9, 3e-4),
  "large": ("large", 28, 1024, 2624, 4928, 5e-4, 2e9, 5e-5),
}
PHASE1_TOKENS = 1_719e9
PHASE2_TOKENS, DECAY_TOKENS = 300e9, 50e9
PHASE2_ROWS = 576  # of 8192 tokens: ~4.7M tokens a step, as base's phase 1


def get_config(arg="base"):
  """`arg`: "base" or "large", "phase1" or "phase2", or both ("large,phase2")."""
  words = set((arg or "base").split(","))
  unknown = words - set(SIZES) - {"phase1", "phase2"}
  if unknown or len(words & set(SIZES)) > 1 or {"phase1", "phase2"} <= words:
    raise ValueError(f"the config argument is a size (base, large) and/or a phase, not {arg!r}")
  size = next(iter(words & set(SIZES)), "base")
  preset, layers, hidden, intermediate, rows, lr, warmup_tokens, lr2 = SIZES[size]

  c = config_lib.base_config()
  c.model.arch = "modernbert"
  c.model.size = preset
  c.model.num_layers, c.model.hidden_size = layers, hidden
  c.model.intermediate_size = intermediate  # Wi maps to twice this: GeGLU input and gate
  c.model.hidden_act = "gelu"
  c.model.local_attention = 128  # sliding window: |q - k| <= 64
  c.model.global_attn_every_n_layers = 3  # layers 0, 3, 6, ... attend globally
  c.model.local_rope_theta = 10_000.0
  c.model.max_position_embeddings = 8192  # RoPE has no table: the limit of both phases
  c.model.hidden_dropout = 0.0
  c.model.attention_dropout = 0.0
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True  # layer 0, then groups of 3 (local, local, global) scanned
  c.tokenizer.model_type = "bytelevel_bpe"
  c.tokenizer.vocab_size = 50368
  c.data.input = "data/corpus/*.txt"
  c.data.objective = "mlm"
  c.data.packing = True
  c.data.mask_rate = 0.3
  c.eval.mask_rate = 0.15  # the held-out rows mask at 15 %, as the yaml evaluates
  c.data.num_shards = 1024
  c.data.lanes = 64  # divides every batch below; 1..64 hosts read the same batches
  c.train.b2 = 0.98
  c.train.weight_decay = 1e-5
  c.mesh.data, c.mesh.fsdp = 1, -1  # shard params and optimizer state over all devices
  if "phase2" not in words:
    c.model.global_rope_theta = 10_000.0
    c.model.remat_policy = "dots_no_batch"  # scanned, no remat: 19.9 GiB a v5e:16x16 chip
    c.data.max_seq_length, c.data.max_predictions_per_seq = 1024, 308  # 30 %, rounded up
    c.data.prepared_dir = "data/prepared1024"
    c.train.batch_size = rows
    tokens = rows * 1024
    c.train.steps = round(PHASE1_TOKENS / tokens)
    c.train.warmup_steps = round(warmup_tokens / tokens)
    c.train.learning_rate = lr
    c.train.decay = "constant"  # the trapezoid's decay comes at the end of phase 2
  else:
    c.model.global_rope_theta = 160_000.0
    c.model.remat_policy = "full"  # 8192-token rows: recompute activations
    c.data.max_seq_length, c.data.max_predictions_per_seq = 8192, 2458
    c.data.prepared_dir = "data/prepared8192"  # its own shards of 8192-token rows ...
    c.tokenizer.path = "data/prepared1024/tokenizer.json"  # ... with phase 1's tokenizer
    c.train.batch_size = PHASE2_ROWS
    c.train.steps = round(PHASE2_TOKENS / (PHASE2_ROWS * 8192))
    c.train.warmup_steps = 0  # the rate drops from phase 1's: no warmup
    c.train.learning_rate = lr2
    c.train.decay = "wsd"
    c.train.decay_fraction = DECAY_TOKENS / PHASE2_TOKENS
    c.init_from = "runs/mbert1024"  # phase 1's workdir
  return c
