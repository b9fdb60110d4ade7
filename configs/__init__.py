"""The recipes: one file per run, `get_config(arg=None)` returning an ml_collections ConfigDict.

Installed with the package as `bert_jax.configs` (this folder is its one copy), so
`bert-jax pretrain` and `bert-jax finetune` find their default recipes outside a clone, and
`--config configs/NAME.py` resolves to the installed recipe when no such file is here.
"""
