"""Input pipeline: corpus -> tokenizer -> NSP instances -> masked batches.

`corpus`, `tokenizer`, `instances` and `synthetic` import without TensorFlow;
`masking` and `pretrain` need it.
"""
