"""The BERT encoder (`bert`), the pretraining model (`pretraining`), the fine-tuning heads
(`tasks`), the model a checkpoint describes (`registry`), attention kernels (`attention`)
and the logical axis names (`axes`).

Importable without TensorFlow or ml_collections: configs are converted to the frozen
`bert.BertConfig` dataclass at the boundary (`bert_jax.config.model_config`).
"""
