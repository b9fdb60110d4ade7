"""The embedded default: a tiny BERT pretrained on CPython's own documentation.

    bert-jax pretrain --workdir runs/demo          # this file is the default --config
    bert-jax pretrain --config configs/demo.py:modernbert --workdir runs/demo_modernbert

Trains a SentencePiece tokenizer on `pydoc_data.topics` plus the standard library's
docstrings, packs the documents into rows and pretrains BERT-tiny (L2/H128) with masked-LM
alone, the lessons of cramming (Geiping & Goldstein 2022) and MosaicBERT for a small compute
budget: no NSP (its pairs teach little on these short documents), packed rows (no padding;
no attention between the examples of a row), no dropout (a model this small underfits), a
higher learning rate and the batch that learns most per second on this CPU (16: 32 and 8
train about as many rows per second, but 32 learns less per row and 8 no more). The mask
rate stays BERT's 15 %, so the eval MLM accuracy compares with the former MLM + NSP recipe's
(0.133 after 1500 steps of 32 in 8.6 minutes). Measured on 2 CPU cores (Python 3.11.7):
7.6 to 8.7 minutes from a fresh clone, install included, for 4800 steps of 16 rows (about
22 passes over the 3564 training rows), eval MLM accuracy 0.167 on 160 of the 163 held-out
rows against 0.053 for always predicting the most frequent token (the README's figures;
0.184 on 160 rows before sentences longer than a row were kept whole, 2026-11-30). The
last digits move with any change to the order of a sum: before the embedding gradients
summed in another order (`bert_jax/model/lookup.py`) the same recipe ended at 0.157.

`:modernbert` trains a tiny ModernBERT (L3/H128) the ModernBERT way on the same text: a
byte-level BPE tokenizer, MLM only with 30 % masking on packed rows, no dropout, a
warmup-stable-decay schedule; layer 0 attends globally, layers 1 and 2 within a 32-token
sliding window (rows are 128 tokens).
"""

from bert_jax import config as config_lib


def get_config(arch="bert"):
  """`arch`: "bert" (the default) or "modernbert"."""
  if arch not in ("bert", "modernbert"):
    raise ValueError(f"the config argument is :bert or :modernbert, not :{arch}")
  c = config_lib.base_config()
  c.model.size = "tiny"
  c.tokenizer.vocab_size = 8192
  c.data.input = "builtin:python_docs"
  c.data.max_seq_length = 128
  c.data.max_predictions_per_seq = 20  # 15 % of 128
  c.data.objective = "mlm"  # masked-LM alone, no next-sentence pairs
  c.data.packing = True  # rows filled with [CLS] chunk [SEP] examples, no attention across
  c.data.num_shards = 8  # one per lane (config.data.lanes = 8): 1, 2, 4 or 8 hosts
  c.data.eval_fraction = 0.05
  c.model.hidden_dropout = c.model.attention_dropout = 0.0  # a tiny model underfits
  c.train.warmup_steps = 100
  if arch == "bert":
    c.data.dupe_factor = 1  # packed chunks are cut the same way each pass; masks change anyway
    c.train.steps = 4800
    c.train.batch_size = 16  # the most learning per second on 2 CPU cores (32: less per row)
    c.train.learning_rate = 2e-3  # the best of 1e-3, 2e-3, 3e-3 (4e-3 stalls at the baseline)
    c.train.log_every_steps = 100
    c.eval.every_steps = 1200
    c.eval.steps = 10  # 160 of the 163 held-out rows
    c.checkpoint.every_steps = 1200
  else:
    c.model.arch = "modernbert"
    c.model.num_layers = 3
    c.model.intermediate_size = 192  # GeGLU: Wi maps to twice this
    c.model.local_attention = 32
    c.model.global_attn_every_n_layers = 3
    c.tokenizer.model_type = "bytelevel_bpe"
    c.data.mask_rate = 0.3
    c.data.max_predictions_per_seq = 40
    c.data.dupe_factor = 2  # two row layouts of the packed chunks
    c.train.steps = 1500
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3  # small models take a larger rate (Turc et al. 2019)
    c.train.decay = "wsd"
    c.train.decay_fraction = 0.2
    c.train.log_every_steps = 50
    c.eval.every_steps = 500
    c.eval.steps = 14
    c.checkpoint.every_steps = 500
  return c
