"""IMDb movie review sentiment (TFDS imdb_reviews: 25k train, 25k test reviews).

    bert-jax finetune --config configs/finetune/imdb.py --workdir runs/imdb \
      --config.init_from=runs/bert_base

Batch 32, 3 epochs, learning rate 2e-5, 10 % warmup; scored by accuracy on the test split
(IMDb has no dev split). Reviews average about 300 WordPiece tokens: 512 (the usual, and
the most BERT takes) reads nearly all of them but costs about 4x the compute of 256; 256
keeps the head of each review (--config.data.max_seq_length=512 for the usual setting).
"""

from bert_jax import config as config_lib


def get_config():
  c = config_lib.tfds_finetune_config("imdb_reviews")
  c.data.max_seq_length = 256  # the usual 512 costs ~4x; see above
  c.train.epochs = 3.0
  c.train.batch_size = 32
  c.train.learning_rate = 2e-5
  return c
