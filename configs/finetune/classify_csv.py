"""A text classifier from your own CSV / TSV / JSON Lines files (the default of `finetune`).

    bert-jax finetune --config configs/finetune/classify_csv.py --workdir runs/clf \
      --config.init_from=runs/minilm \
      --config.data.train=data/train.csv --config.data.eval=data/test.csv

Columns `text` (and `config.data.text_pair_column` for pairs) and `label` (strings or
ints; the label map is saved with the checkpoint). The paper's recipe: batch 32, 3 epochs,
10 % warmup then linear decay, dropout 0.1; learning rate 5e-5 (of 5e-5, 4e-5, 3e-5, 2e-5) suits
small models such as MiniLM.
"""

from bert_jax import config as config_lib


def get_config():
  c = config_lib.finetune_base_config()
  c.task = "classification"
  c.data.text_column = "text"
  c.data.label_column = "label"
  c.data.max_seq_length = 128
  c.train.epochs = 3.0
  c.train.batch_size = 32
  c.train.learning_rate = 5e-5
  return c
