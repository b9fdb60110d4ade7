"""bert_jax: pretrain, adapt, fine-tune and export BERT models with JAX and Flax."""

__version__ = "0.1.0"
