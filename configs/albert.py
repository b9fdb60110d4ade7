"""ALBERT from scratch (Lan et al., 2020): base, large, xlarge or xxlarge.

    bert-jax pretrain --config configs/albert.py --workdir runs/albert_base
    bert-jax pretrain --config configs/albert.py:xxlarge --workdir runs/albert_xxlarge
    bert-jax export-hf --workdir runs/albert_base --out hf/albert_base   # AlbertForPreTraining

One set of layer parameters shared across the depth, factorised embeddings (E 128), and two
tasks: masked LM and sentence-order prediction (`data.objective="sop"`: two consecutive
segments of one document, swapped half of the time). Masking as the paper's: n-grams of
whole words (`data.max_ngram=3`, n drawn with p(n) proportional to 1/n: 6/11, 3/11, 2/11),
15 % of the tokens, 80/10/10.

The paper's section 4.1 and Table 1:

| size | layers x hidden (E) | heads | parameters |
| --- | --- | --- | --- |
| base | 12 x 768 (128) | 12 | 12M |
| large | 24 x 1024 (128) | 16 | 18M |
| xlarge | 24 x 2048 (128) | 32 | 60M |
| xxlarge | 12 x 4096 (128) | 64 | 235M |

Every size: sequences of 512 tokens (10 % of them shorter), a SentencePiece vocabulary of
30,000, batch 4096, LAMB at learning rate 0.00176, 125k steps with linear decay, dropout
0.1 (the v1 models; the v2 models were trained further without dropout). From the
released code's pretraining command: 3,125 warmup steps and 20 predictions per row (the
budget is that cap, not 15 % of 512). Where bert_jax differs: bfloat16 compute with
float32 parameters, scanned layers, and rematerialisation (BERT-large's `dots_no_batch`;
xxlarge `full`). `bert-jax compile` fits base on v5e:8x8 (8.3 GiB peak per chip), large on
v5e:8x16 (9.4 GiB), xlarge on v5e:16x16 (10.1 GiB) and xxlarge on v5e:8x16 (10.8 GiB).
Not yet run by us at these scales.
"""

from bert_jax import config as config_lib

# size: (preset, layers, hidden, remat policy)
SIZES = {
  "base": ("base", 12, 768, "dots_no_batch"),
  "large": ("large", 24, 1024, "dots_no_batch"),
  "xlarge": ("large", 24, 2048, "dots_no_batch"),
  "xxlarge": ("base", 12, 4096, "full"),
}


def get_config(arg="base"):
  size = arg
  if size not in SIZES:
    raise ValueError(f"the config argument is a size ({', '.join(SIZES)}), not {arg!r}")
  preset, layers, hidden, remat = SIZES[size]
  c = config_lib.base_config()
  c.model.arch = "albert"
  c.model.size = preset
  c.model.num_layers = layers
  c.model.hidden_size = hidden
  c.model.embedding_size = 128
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.model.remat_policy = remat
  c.tokenizer.model_type = "unigram"
  c.tokenizer.vocab_size = 30000
  c.data.input = "data/corpus/*.txt"
  c.data.objective = "sop"
  c.data.max_seq_length = 512
  c.data.max_predictions_per_seq = 20  # ALBERT's cap at 512 tokens (3.9 %), as its recipe
  c.data.whole_word_masking = True
  c.data.max_ngram = 3
  c.data.num_shards = 1024  # 4 shards to each of 256 lanes
  c.data.lanes = 256  # 1..256 hosts (powers of 2) read the same batches
  c.train.optimizer = "lamb"
  c.train.steps = 125_000
  c.train.batch_size = 4096
  c.train.learning_rate = 0.00176
  c.train.warmup_steps = 3125
  return c
