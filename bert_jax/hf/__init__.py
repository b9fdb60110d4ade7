"""Hugging Face interop: parameter table, checkpoint files, tokenizer files, export, import."""
