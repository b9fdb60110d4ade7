"""The BERT encoder (`bert`), its heads (`heads`) and attention kernel choice (`attention`).

Importable without TensorFlow or ml_collections: configs are converted to the frozen
`bert.BertConfig` dataclass at the boundary (`bert_jax.config.model_config`).
"""
