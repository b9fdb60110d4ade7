"""Tiny tokenizers of the model families, trained here on a few hundred lines, offline.

Each is made as the family's checkpoints make theirs (its `tokenizers` trainer, the files its
`transformers` class reads), so that `import_tokenizer` meets what it meets in the wild.
"""

import json
import os

SPECIAL_PIECES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_files(
  lines, directory, *, lowercase=True, specials=SPECIAL_PIECES, config=None, **train
):
  """A BERT `vocab.txt` (and `tokenizer_config.json` holding `config`, when given) trained on
  `lines` in `directory` (made if missing), as `BertWordPieceTokenizer` trains and saves it.

  Args:
    lines: the text.
    directory: a `pathlib.Path`.
    lowercase: lowercase and strip accents, or keep both (BERT's cased vocabularies).
    specials: the special tokens, first in the vocabulary.
    config: the `tokenizer_config.json` to write, or None.
    **train: `train_from_iterator`'s `vocab_size`, `min_frequency`.

  Returns:
    `directory`.
  """
  from tokenizers import BertWordPieceTokenizer

  wordpiece = BertWordPieceTokenizer(lowercase=lowercase)  # accents stripped iff lowercase
  wordpiece.train_from_iterator(lines, special_tokens=list(specials), show_progress=False, **train)
  directory.mkdir(parents=True, exist_ok=True)
  wordpiece.save_model(str(directory))
  if config is not None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
  return directory


def albert_files(lines, directory, *, vocab_size):
  """ALBERT's `spiece.model` (`[CLS]`, `[SEP]`, `[MASK]` control pieces) and the
  `tokenizer_config.json` naming `AlbertTokenizer`, trained on `lines` in `directory` (made).
  """
  import sentencepiece

  directory.mkdir(parents=True, exist_ok=True)
  sentencepiece.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_prefix=str(directory / "spiece"),
    vocab_size=vocab_size,
    pad_id=0,
    unk_id=1,
    bos_id=-1,
    eos_id=-1,
    control_symbols=["[CLS]", "[SEP]", "[MASK]"],
    num_threads=1,
    minloglevel=2,
  )
  os.remove(directory / "spiece.vocab")
  (directory / "tokenizer_config.json").write_text('{"tokenizer_class": "AlbertTokenizer"}')
  return directory


def modernbert_bpe(lines, *, vocab_size):
  """ModernBERT's kind of tokenizer: byte-level BPE whose BERT-named specials come after the
  merges, a `[MASK]` that takes the space before it, `[CLS] A [SEP] B [SEP]` all of token
  type 0; as the `transformers.PreTrainedTokenizerFast` a checkpoint saves.
  """
  import transformers
  from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
  )

  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False
  )
  bpe.train_from_iterator(lines, trainer)
  names = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
  bpe.add_special_tokens(
    [AddedToken(t, special=True, normalized=False, lstrip=t == "[MASK]") for t in names]
  )
  cls, sep = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
  bpe.post_processor = processors.TemplateProcessing(
    single="[CLS]:0 $A:0 [SEP]:0",
    pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
    special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
  )
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=bpe, **{f"{n[1:-1].lower()}_token": n for n in names}
  )
