"""Where `bert-jax` keeps JAX's persistent compilation cache (bert_jax/compile_cache.py);
tests/test_pretrain.py has a second command loading from it.
"""

import pytest

from bert_jax import compile_cache


@pytest.mark.parametrize(
  "environ, folder",
  [
    ({"HOME": "/home/u"}, "/home/u/.cache/bert_jax/xla"),
    ({"HOME": "/home/u", "XDG_CACHE_HOME": "/c"}, "/c/bert_jax/xla"),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "gs://b/xla"}, "gs://b/xla"),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "off"}, None),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "OFF"}, None),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "0"}, None),
    # JAX's own variable: JAX reads it, bert-jax leaves it.
    ({"HOME": "/home/u", "JAX_COMPILATION_CACHE_DIR": "/j"}, None),
    ({"HOME": "/home/u", "JAX_COMPILATION_CACHE_DIR": "/j", "BERT_JAX_COMPILE_CACHE": "/b"}, None),
  ],
)
def test_the_cache_folder(environ, folder, monkeypatch):
  monkeypatch.setenv("HOME", environ["HOME"])  # expanduser reads the process's HOME
  assert compile_cache.directory(environ) == folder
