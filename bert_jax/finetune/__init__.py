"""Fine-tuning: task data readers and label maps, SQuAD windows and n-best, the TFDS task
registry, task metrics, the loss objective, and evaluate / predict of a fine-tuned run.

The job that trains a head is `bert_jax.train.finetune`; this package holds what it and
the `evaluate` / `predict` commands read and compute.
"""
