"""CoNLL-2003 named entity recognition, BERT's fine-tuning approach (Devlin et al. 2018, §5.3).

    bert-jax finetune --config configs/finetune/conll2003.py --workdir runs/conll2003 \
      --config.init_from=runs/bert_base_cased

A tag per word from its first sub-token; scored by entity-level F1 on the dev split. 3
epochs, learning rate 5e-5, batch 32, 128 tokens. NER wants a cased model (the paper
uses cased WordPiece for it).
"""

from bert_jax import config as config_lib


def get_config():
  c = config_lib.tfds_finetune_config("conll2003")
  c.data.max_seq_length = 128
  c.train.epochs = 3.0
  c.train.batch_size = 32
  c.train.learning_rate = 5e-5
  return c
