"""The pretraining data path: corpus -> tokenizer -> rows in shards -> masked batches.

Modules, in the order the data flows through them:

    sources    the input (files, TFDS, the built-in corpus) cut into work units; a unit's
               documents streamed in constant memory
    corpus     sentence splitting, and the built-in corpus (CPython's documentation)
    tokenizer  SentencePiece (trained here) or WordPiece (a checkpoint's) tokenizers
    instances  rows from tokenized documents, for each objective (nsp, sop, mlm)
    records    a row's bytes in a shard, and records decoded into padded arrays
    prepare    `bert-jax prepare`: the units, in a process pool, into shards and a manifest
    masking    masks and epoch orders: pure numpy functions of integer keys
    pipeline   the masked batches of one process at a step, read from the shards
    synthetic  random batches in the pipeline's layout (benchmarks without data)

Words, each for one thing:

    document   a list of sentences (text, then token ids); a blank line ends one in the
               `bert` file format
    row        the unit the model sees: at most `max_seq_length` tokens, `[CLS] A [SEP] B
               [SEP]` (nsp, sop) or `[CLS] ... [SEP]` (mlm), with its segment lengths and
               label; a batch holds rows
    segment    a part of a row: A or B (token types), or a packed example
    example    with `config.data.packing`, one `[CLS] chunk [SEP]` of a document; several
               are packed into a row
    instance   google-research/bert's name for a row ("training instance"); the module
               `instances` keeps it, after `create_training_instances`
    record     the bytes of one row in an ArrayRecord shard (`records.encode_row`)
    shard      one ArrayRecord file of a split, written by one work unit
    unit       a piece of preparation work: files, a byte range of a file, or a part of a
               TFDS split (`sources.Unit`)
    lane       one of `config.data.lanes` streams of shards that a split is read in

Only numpy is needed to import `corpus`, `tokenizer`, `instances`, `records`, `masking` and
`synthetic` (SentencePiece and Hugging Face `tokenizers` load when a tokenizer is made).
`pipeline` reads shards with ArrayRecord and runs under tf.data when TensorFlow is
installed, else in threads; `sources` imports TensorFlow Datasets for `tfds:` inputs only.
"""
