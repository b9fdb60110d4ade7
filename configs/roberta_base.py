"""RoBERTa-base (L12/H768, 125M parameters) from scratch, as Liu et al. (2019).

    bert-jax pretrain --config configs/roberta_base.py --workdir runs/roberta_base
    bert-jax export-hf --workdir runs/roberta_base --out hf/roberta_base   # RobertaForMaskedLM

MLM only (no next-sentence task) on packed rows (`data.objective="mlm"`,
`data.packing=True`): each document cut into `<s> ... </s>` examples of up to 512 tokens,
several packed per row, none attending to another (RoBERTa's FULL-SENTENCES, sentences run
across document boundaries, is `data.packing=False`). Dynamic masking: the pipeline draws new masks every
time a row is read. A byte-level BPE tokenizer of 50,265 pieces trained with `tokenizers`
(`tokenizer.model_type="bytelevel_bpe"`; no unknown tokens). Settings of the paper's
Table 9: batch 8k, peak learning rate 6e-4 after 24k warmup steps, linear decay, 500k
steps, Adam b2 0.98 and eps 1e-6, weight decay 0.01, dropout 0.1. bf16 compute with
float32 parameters. Data: `config.data.input` globs of your corpus (one document per file,
or the BERT format). Not yet run by us at this scale.
"""

from bert_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.model.arch = "roberta"
  c.model.size = "base"
  # RoBERTa's 514 rows: positions start after the padding id, so 513 tokens with a tokenizer
  # trained here ([PAD] is id 0), 512 with RoBERTa's own (<pad> is id 1).
  c.model.max_position_embeddings = 514
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.tokenizer.model_type = "bytelevel_bpe"
  c.tokenizer.vocab_size = 50265
  c.data.input = "data/corpus/*.txt"
  c.data.objective = "mlm"
  c.data.packing = True
  c.data.max_seq_length = 512
  c.data.max_predictions_per_seq = 80  # 15 % of 512, rounded up
  c.data.num_shards = 1024
  c.data.lanes = 256
  c.train.steps = 500_000
  c.train.batch_size = 8192
  c.train.learning_rate = 6e-4
  c.train.warmup_steps = 24_000
  c.train.b2 = 0.98
  c.mesh.data, c.mesh.fsdp = 1, -1
  return c
