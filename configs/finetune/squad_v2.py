"""SQuAD 2.0 question answering with the paper's recipe (Devlin et al. 2018, §4.3).

    bert-jax finetune --config configs/finetune/squad_v2.py --workdir runs/squad_v2 \
      --config.init_from=runs/bert_base

2 epochs, learning rate 5e-5, batch 48; windows as for SQuAD 1.1 (384 tokens, stride
128, questions of at most 64 tokens). Questions may have no answer: the answer is empty
when the [CLS] (null) score beats the best span by more than config.qa.null_threshold,
which the paper tunes on the dev set to maximise F1.
"""

from bert_jax import config as config_lib


def get_config():
  c = config_lib.tfds_finetune_config("squad/v2.0")
  c.data.max_seq_length = 384
  c.data.doc_stride = 128
  c.data.max_query_length = 64
  c.qa.version_2 = True
  c.train.epochs = 2.0
  c.train.batch_size = 48
  c.train.learning_rate = 5e-5
  return c
