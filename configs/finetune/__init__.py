"""Fine-tuning recipes: your own CSV / JSONL files, GLUE (`glue.py:TASK`), SQuAD, CoNLL, IMDb."""
