"""ELECTRA from scratch (Clark et al., 2020): replaced-token detection, small, base or large.

    bert-jax pretrain --config configs/electra.py --workdir runs/electra_small
    bert-jax pretrain --config configs/electra.py:base --workdir runs/electra_base
    bert-jax export-hf --workdir runs/electra_small --out hf/electra_small
    # hf/electra_small: ElectraForPreTraining (the discriminator, the model to fine-tune)
    # hf/electra_small/generator: ElectraForMaskedLM (the generator, for fill-mask)

A small generator (`model.generator_hidden_size`, the same depth, heads of 64) learns
masked LM and fills the masked positions with tokens sampled from its softmax; the
discriminator learns, at every token, whether the generator replaced it. Both share the
embeddings; the loss is the generator's MLM loss plus 50 times the discriminator's
(`model.discriminator_weight`). Masking as the paper's code does it: 15 % of the tokens
(large: 25 %), 85 % of them [MASK] and 15 % left as they are (no random tokens). MLM only,
no sentence-pair task; full-sentence rows (sentences fill each row across document
boundaries, [SEP] between documents: RoBERTa's FULL-SENTENCES).

The paper's Table 6 and 7:

| size | layers x hidden (E) | generator | seq | batch | lr | steps |
| --- | --- | --- | --- | --- | --- | --- |
| small | 12 x 256 (128) | 64 (1/4) | 128 | 128 | 3e-4 | 1M |
| base | 12 x 768 (768) | 256 (1/3) | 512 | 256 | 2e-4 | 766k |
| large | 24 x 1024 (1024) | 256 (1/4) | 512 | 2048 | 2e-4 | 400k |

Adam b1 0.9, b2 0.999, eps 1e-6, weight decay 0.01, 10k warmup steps, linear decay,
dropout 0.1, a WordPiece vocabulary of 30,522 (uncased). Where bert_jax differs: the
paper's small model trains at batch 128 on one accelerator in float32; base and large here
compute in bfloat16 with scanned layers, large with BERT-large's rematerialisation.
`bert-jax compile` fits small on one v5e chip (2.6 GiB peak, 14.2M parameters), base on
v5e:4x4 (11.2 GiB per chip, 119M) and large on v5e:8x8 (14.8 GiB).
Not yet run by us at these scales.
"""

from bert_jax import config as config_lib

# size: (preset, layers, hidden, embedding, generator hidden, seq, batch, lr, steps, mask rate)
SIZES = {
  "small": ("mini", 12, 256, 128, 64, 128, 128, 3e-4, 1_000_000, 0.15),
  "base": ("base", 12, 768, 768, 256, 512, 256, 2e-4, 766_000, 0.15),
  "large": ("large", 24, 1024, 1024, 256, 512, 2048, 2e-4, 400_000, 0.25),
}


def get_config(arg="small"):
  size = arg
  if size not in SIZES:
    raise ValueError(f"the config argument is a size ({', '.join(SIZES)}), not {arg!r}")
  preset, layers, hidden, embedding, generator, seq, batch, lr, steps, mask = SIZES[size]
  c = config_lib.base_config()
  c.model.arch = "electra"
  c.model.size = preset
  c.model.num_layers = layers
  c.model.hidden_size = hidden
  c.model.embedding_size = embedding
  c.model.generator_hidden_size = generator
  if size != "small":
    c.model.dtype = "bfloat16"
    c.model.scan_layers = True  # compiles in a fraction of the unrolled time
  if size == "large":
    c.model.remat_policy = "dots_no_batch"  # as BERT-large's
  c.tokenizer.model_type = "wordpiece"
  c.data.input = "data/corpus/*.txt"
  c.data.objective = "mlm"
  c.data.max_seq_length = seq
  c.data.max_predictions_per_seq = round(mask * seq) + 1
  c.data.mask_rate = mask
  c.data.mask_token_rate = 0.85
  c.data.random_token_rate = 0.0
  c.data.num_shards = 1024
  c.data.lanes = min(256, batch)  # divides the batch; up to that many hosts
  c.train.steps = steps
  c.train.batch_size = batch
  c.train.learning_rate = lr
  return c
