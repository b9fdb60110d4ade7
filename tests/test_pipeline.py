"""The training stream over prepared shards: per-process shards disjoint and covering,
epochs, exact resume, tf.data and threads alike, and no process starved by another.
"""

import os
import shutil

import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.data import masking, pipeline, prepare
from bert_jax.data import tokenizer as tokenizer_lib


def _corpus(path, documents=120, seed=0):
  """BERT-format text: documents of 2-8 sentences of made-up words."""
  rng = np.random.default_rng(seed)
  words = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "omega",
    "river",
    "stone",
    "light",
    "north",
    "table",
    "garden",
    "silver",
    "window",
    "market",
    "forest",
    "engine",
  ]
  lines = []
  for _ in range(documents):
    for _ in range(rng.integers(2, 9)):
      lines.append(" ".join(rng.choice(words, size=rng.integers(4, 14))).capitalize() + ".")
    lines.append("")
  path.write_text("\n".join(lines))


def small_config(tmp_path, **data):
  c = config_lib.base_config()
  _corpus(tmp_path / "corpus.txt")
  c.data.input = str(tmp_path / "corpus.txt")
  c.data.max_seq_length = 32
  c.data.max_predictions_per_seq = 5
  c.data.num_shards = 6
  c.data.num_workers = 1
  c.data.eval_fraction = 0.1
  c.data.documents_per_chunk = 20
  c.tokenizer.vocab_size = 300
  for key, value in data.items():
    c.data[key] = value
  return c


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("pipeline")
  data_dir = str(tmp / "data")
  manifest = prepare.prepare(small_config(tmp), data_dir, log=lambda _: None, progress=False)
  return data_dir, manifest


def _stream(prepared, split="train", batch_size=8, **kwargs):
  data_dir, manifest = prepared
  return pipeline.Stream(
    data_dir, manifest, split, batch_size=batch_size, seed=3, max_predictions=5, **kwargs
  )


def _row_ids(stream, steps):
  """Global ids (shard << 32 | record) of the rows read in `steps` steps."""
  ids = []
  for step in range(steps):
    q = step * stream.rows + np.arange(stream.rows)
    index = q % stream.lanes[0].size
    _, row_ids = stream.lanes[0].read(index)
    ids.append(row_ids)
  return np.concatenate(ids)


def test_process_shards_are_disjoint_and_cover(prepared):
  data_dir, manifest = prepared
  total = manifest["splits"]["train"]["rows"]
  every = set()
  for count in (1, 2, 3):
    seen = []
    for index in range(count):
      s = _stream(prepared, batch_size=6, process_index=index, process_count=count)
      ids = set(_row_ids(s, -(-s.lanes[0].size // s.rows)).tolist())
      assert len(ids) == s.lanes[0].size
      seen.append(ids)
    union = set().union(*seen)
    assert sum(map(len, seen)) == len(union) == total  # disjoint and covering
    every |= union
  assert len(every) == total


def test_an_epoch_reads_every_row_once_then_reshuffles(prepared):
  s = _stream(prepared, batch_size=1)
  lane = s.lanes[0]

  def ids_of(steps):
    return [int(lane.read(s.lane_indices(lane, step)[1])[1][0]) for step in steps]

  first, second = ids_of(range(lane.size)), ids_of(range(lane.size, 2 * lane.size))
  assert sorted(first) == sorted(second) and len(set(first)) == lane.size
  assert first != second  # a new order each epoch


def test_the_global_batch_is_the_same_for_every_process_count(prepared):
  """With 4 lanes, 1, 2 or 4 processes read the same global batches (process i's rows are
  its slice of the global batch), so a run resumes exactly on another host count.
  """

  def global_batch(count, step):
    parts = [
      _stream(prepared, process_index=i, process_count=count, lanes=4).batch_at(step)
      for i in range(count)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  for step in (0, 5, 40):
    one = global_batch(1, step)
    for count in (2, 4):
      other = global_batch(count, step)
      for key in one:
        np.testing.assert_array_equal(one[key], other[key])
  with pytest.raises(pipeline.UserError, match="lanes"):
    _stream(prepared, process_index=0, process_count=3, lanes=4)


def test_resume_yields_the_uninterrupted_batches(prepared):
  s = _stream(prepared, process_index=1, process_count=2)
  straight = list(pipeline.batches(s, 0, 12, use_tf=True))
  resumed = list(
    pipeline.batches(_stream(prepared, process_index=1, process_count=2), 7, 12, use_tf=False)
  )
  for a, b in zip(straight[7:], resumed):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_masks_are_fresh_each_epoch_and_fixed_within_one(prepared):
  """In order (shuffle off), step s and step s + n read the same row: in another epoch, so
  with another mask; the same step twice gives the same mask.
  """
  s = _stream(prepared, batch_size=1, shuffle=False)
  n = s.lanes[0].size
  changed = 0
  for step in range(10):
    a, b = s.batch_at(step), s.batch_at(step + n)
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])  # the same row
    np.testing.assert_array_equal(a["input_ids"], s.batch_at(step)["input_ids"])
    changed += not np.array_equal(a["masked_lm_positions"], b["masked_lm_positions"])
  assert changed >= 8


def test_ngram_masking_reaches_the_batches(prepared):
  """config.data.max_ngram travels to the masks: a batch is `masking.mask_batch` with
  max_ngram=3 and whole words of the rows read, under the stream's row keys.
  """
  data_dir, manifest = prepared
  stream = pipeline.Stream(
    data_dir,
    manifest,
    "train",
    batch_size=16,
    seed=3,
    max_predictions=12,
    mask_rate=0.4,  # room for spans of several words in rows of 32
    whole_word_masking=True,
    max_ngram=3,
  )
  batch = stream.batch_at(2)
  rows = batch["input_ids"].copy()  # the ids before masking, from the labels
  for row, positions, ids, weights in zip(
    rows, batch["masked_lm_positions"], batch["masked_lm_ids"], batch["masked_lm_weights"]
  ):
    row[positions[weights > 0]] = ids[weights > 0]
  epochs, row_ids = zip(*(stream.lane_indices(lane, 2) for lane in stream.lanes))
  row_ids = [lane.read(index)[1] for lane, index in zip(stream.lanes, row_ids)]
  keys = masking.row_keys(3, np.concatenate(epochs), np.concatenate(row_ids))
  tok = tokenizer_lib.load(os.path.join(data_dir, manifest["tokenizer_file"]))
  masks = {
    max_ngram: masking.mask_batch(
      rows,
      keys,
      special_table=tok.special_table(),
      word_start_table=tok.word_start_table(),
      max_predictions=12,
      mask_id=tok.mask_id,
      mask_rate=0.4,
      max_ngram=max_ngram,
    )
    for max_ngram in (1, 3)
  }
  for name, value in masks[3].items():
    np.testing.assert_array_equal(batch[name], value, err_msg=name)
  assert not np.array_equal(masks[1]["masked_lm_positions"], masks[3]["masked_lm_positions"])


def test_batches_have_the_model_layout(prepared):
  batch = _stream(prepared).batch_at(0)
  assert set(batch) == set(pipeline.BATCH_KEYS)
  assert batch["input_ids"].shape == (8, 32) and batch["masked_lm_ids"].shape == (8, 5)
  mask = batch["attention_mask"]
  assert set(np.unique(mask)) <= {0, 1}
  np.testing.assert_array_equal(batch["position_ids"], np.cumsum(mask, 1) - 1 + (mask == 0))
  # nsp rows: [CLS] A [SEP] B [SEP]; type 1 begins right after the first [SEP].
  data_dir, manifest = prepared
  cls_id = manifest["special_ids"]["cls"]
  for ids, types, m in zip(batch["input_ids"], batch["token_type_ids"], mask):
    length = int(m.sum())
    assert ids[0] == cls_id
    first_sep = int(np.flatnonzero(types)[0]) - 1 if types.any() else length - 1
    assert types[: first_sep + 1].sum() == 0 and types[first_sep + 1 : length].all()
  assert set(np.unique(batch["next_sentence_labels"])) <= {0, 1}


def test_no_process_runs_dry(prepared):
  """Processes own different numbers of rows yet each yields a batch at every step, far
  past its own epoch, so none waits for another at a collective.
  """
  streams = [_stream(prepared, batch_size=9, process_index=i, process_count=3) for i in range(3)]
  sizes = {s.lanes[0].size for s in streams}
  far = max(sizes)  # step * 3 rows: three epochs of the largest process
  for s in streams:
    assert s.batch_at(far)["input_ids"].shape == (3, 32)


def test_too_many_processes_is_an_error(prepared):
  with pytest.raises(pipeline.UserError, match="num_shards"):
    _stream(prepared, batch_size=64, process_index=0, process_count=64)


@pytest.mark.parametrize(
  "lanes,shards,processes,batch,expected",
  [
    (8, 8, 1, 32, 8),  # enough shards: the lanes asked for
    (8, 64, 2, 32, 8),
    (8, 6, 1, 32, 4),  # 4 divides 8 and fits in 6
    (8, 2, 1, 32, 2),
    (8, 7, 2, 32, 4),
    (8, 5, 4, 32, 4),
    (8, 3, 4, 32, 0),  # fewer shards than processes: none
    (6, 5, 1, 12, 3),
    (256, 100, 8, 256, 64),
  ],
)
def test_lane_count(lanes, shards, processes, batch, expected):
  assert pipeline.lane_count(lanes, shards, processes, batch) == expected


def test_a_split_with_fewer_shards_than_lanes_is_read_in_fewer(prepared):
  """6 non-empty shards, 8 lanes asked: read exactly as with 4 lanes (the most that divide
  8 and fit), said once for the train split; the eval split adapts silently.
  """
  data_dir, manifest = prepared
  assert sum(1 for s in manifest["splits"]["train"]["shards"] if s["rows"]) == 6
  lines = []
  adapted = _stream(prepared, lanes=8, log=lines.append)
  assert adapted.lane_count == 4 and adapted.position(3)["lanes"] == 4
  assert len(lines) == 1 and "6 non-empty shard(s)" in lines[0] and "as 4 lanes" in lines[0]
  four = _stream(prepared, lanes=4, log=pytest.fail)
  for step in (0, 3, 50):
    a, b = adapted.batch_at(step), four.batch_at(step)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Two processes share the 4 lanes as they share 4 asked for.
  halves = [
    _stream(prepared, lanes=8, process_index=i, process_count=2, log=lines.append).batch_at(3)
    for i in range(2)
  ]
  np.testing.assert_array_equal(
    np.concatenate([h["input_ids"] for h in halves]), four.batch_at(3)["input_ids"]
  )
  eval_rows = _stream(prepared, split="eval", lanes=8, log=pytest.fail, shuffle=False).batch_at(0)
  assert eval_rows["input_ids"].shape == (8, 32)


def test_a_damaged_shard_is_one_line_naming_the_files_to_rewrite(prepared, tmp_path):
  """A shard cut short (a damaged disk or copy), found by its size in the manifest, is
  one line that names the shard and what `prepare` needs removed to rewrite its unit alone.
  """
  data_dir, manifest = prepared
  copy = tmp_path / "data"
  shutil.copytree(data_dir, copy)
  shard = copy / manifest["splits"]["train"]["shards"][0]["file"]
  shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
  with pytest.raises(pipeline.UserError) as caught:  # found when the lanes open the shards
    pipeline.Stream(str(copy), manifest, "train", batch_size=8, seed=3, max_predictions=5)
  unit = shard.name.split("-")[-1].split(".")[0]
  assert f"the shard {shard} is damaged (" in str(caught.value)
  assert f"delete it, shards/unit-{unit}.json and manifest.json in {copy}" in str(caught.value)
  shard.unlink()
  with pytest.raises(pipeline.UserError) as caught:
    pipeline.Stream(str(copy), manifest, "train", batch_size=8, seed=3, max_predictions=5)
  assert str(caught.value).startswith(
    f"the shard {shard} is missing; delete shards/unit-{unit}.json and manifest.json in {copy}"
  )


def test_the_shard_cache_follows_xdg_cache_home():
  assert pipeline.default_cache_dir({"XDG_CACHE_HOME": "/scratch/cache"}) == (
    "/scratch/cache/bert_jax"
  )
  assert pipeline.default_cache_dir({}) == os.path.expanduser("~/.cache/bert_jax")
