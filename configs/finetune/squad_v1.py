"""SQuAD 1.1 question answering with the paper's recipe (Devlin et al. 2018, §4.2).

    bert-jax finetune --config configs/finetune/squad_v1.py --workdir runs/squad_v1 \
      --config.init_from=runs/bert_base

3 epochs, learning rate 5e-5, batch 32; windows of 384 tokens every 128 tokens of the
context, questions cut to 64 tokens (the BERT repo's run_squad.py). Scored on the dev set
by SQuAD's exact match and token F1 (the best checkpoint is kept by F1).
"""

from bert_jax import config as config_lib


def get_config():
  c = config_lib.tfds_finetune_config("squad/v1.1")
  c.data.max_seq_length = 384
  c.data.doc_stride = 128
  c.data.max_query_length = 64
  c.qa.version_2 = False
  c.train.epochs = 3.0
  c.train.batch_size = 32
  c.train.learning_rate = 5e-5
  return c
