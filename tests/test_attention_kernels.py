"""Attention kernels against XLA's: Pallas splash attention (in interpret mode on CPU) with
segment ids and a sliding window, a whole tiny BERT and ModernBERT on splash, cuDNN on a GPU,
and the default kernel of each platform.

Padding queries attend to padding under splash (their outputs are unused), so only real
positions are compared.
"""

import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import sharding
from bert_jax.errors import UserError
from bert_jax.model import attention, axes, bert, modernbert_layers
from tests.conftest import ROOT, needs_devices

LENGTH = 128  # splash's smallest block


def _segment_ids():
  """(4, LENGTH) rows: one example, padded; packed examples then padding; one example,
  unpadded; packed examples filling the row.
  """
  ids = np.zeros((4, LENGTH), np.int32)
  ids[0, :77] = 1
  ids[1, :40], ids[1, 40:90], ids[1, 90:101] = 1, 2, 3
  ids[2, :] = 1
  ids[3, :64], ids[3, 64:] = 1, 2
  return ids


def _qkv(dtype=jnp.float32, heads=2, head_dim=64, seed=0):
  rng = np.random.default_rng(seed)
  shape = (4, LENGTH, heads, head_dim)
  return tuple(jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))


def _attend(implementation, mask, *qkv):
  return jax.jit(lambda q, k, v, m: attention.attend(q, k, v, m, implementation=implementation))(
    *qkv, mask
  )


def _assert_real_positions_close(actual, expected, ids, **tolerance):
  real = ids > 0
  np.testing.assert_allclose(
    np.asarray(actual, np.float32)[real], np.asarray(expected, np.float32)[real], **tolerance
  )


@pytest.mark.parametrize("window", [None, 9])
def test_splash_equals_xla_on_padded_and_packed_rows(window):
  ids = _segment_ids()
  mask = attention.AttentionMask(jnp.asarray(ids), window)
  qkv = _qkv()
  splash = _attend("splash", mask, *qkv)
  xla = _attend("xla", mask, *qkv)
  _assert_real_positions_close(splash, xla, ids, rtol=1e-5, atol=1e-5)


def test_splash_gradients_equal_xla():
  """The backward kernels: gradients of a loss over the real positions."""
  ids = _segment_ids()
  mask = attention.AttentionMask(jnp.asarray(ids), 9)
  qkv = _qkv(heads=1, seed=1)
  weights = (
    jnp.asarray(np.random.default_rng(2).normal(size=qkv[0].shape)) * (ids > 0)[..., None, None]
  )

  def grads(implementation):
    def loss(q, k, v):
      return jnp.sum(attention.attend(q, k, v, mask, implementation=implementation) * weights)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*qkv)

  for splash, xla in zip(grads("splash"), grads("xla")):
    np.testing.assert_allclose(np.asarray(splash), np.asarray(xla), rtol=1e-4, atol=1e-5)


@needs_devices(8)
def test_splash_under_a_mesh_runs_on_batch_and_head_shards():
  """Under `jax.set_mesh` splash runs in `shard_map` over the batch and heads axes."""
  ids = _segment_ids()
  mask = attention.AttentionMask(jnp.asarray(ids))
  qkv = _qkv()
  mesh = jax.make_mesh((2, 2, 2), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with sharding.activate(mesh, axes.DEFAULT_RULES):
    splash = _attend("splash", mask, *qkv)
  _assert_real_positions_close(splash, _attend("xla", mask, *qkv), ids, rtol=1e-5, atol=1e-5)


def _tiny_model(config_class, implementation, fields):
  config = config_class(
    vocab_size=256,
    hidden_size=128,
    num_layers=2,
    num_heads=2,
    intermediate_size=256,
    max_position_embeddings=LENGTH,
    attention_impl=implementation,
    **fields,
  )
  return (modernbert_layers.ModernBert if config.arch == "modernbert" else bert.Bert)(config)


@pytest.mark.parametrize(
  "config_class, fields",
  [
    (bert.BertConfig, {"scan_layers": True, "remat_policy": "dots"}),  # the mask as an argument
    # Layer 0 global, layer 1 local: |q - k| <= 8.
    (modernbert_layers.ModernBertConfig, {"global_attn_every_n_layers": 2, "local_attention": 16}),
  ],
  ids=["bert-scanned-remat", "modernbert-window"],
)
def test_a_tiny_model_on_splash_equals_xla(config_class, fields):
  """Hidden states of the same parameters on `_segment_ids()` rows, both kernels."""
  ids = _segment_ids()
  input_ids = jnp.asarray(np.random.default_rng(3).integers(5, 256, ids.shape) * (ids > 0))
  starts = np.maximum.accumulate(
    np.where(np.diff(ids, prepend=-1, axis=1) != 0, np.arange(LENGTH), 0), axis=1
  )
  position_ids = jnp.asarray(np.arange(LENGTH) - starts)  # restarting in each example
  args = (input_ids, None, jnp.asarray(ids), position_ids)
  xla_model = _tiny_model(config_class, "xla", fields)
  variables = jax.jit(xla_model.init)(jax.random.key(0), *args)
  xla = jax.jit(xla_model.apply)(variables, *args)[0]
  splash = jax.jit(_tiny_model(config_class, "splash", fields).apply)(variables, *args)[0]
  _assert_real_positions_close(splash, xla, ids, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(jax.devices()[0].platform != "gpu", reason="cuDNN attention needs a GPU")
@pytest.mark.parametrize("packed", [True, False], ids=["packed rows, mask", "padded, lengths"])
def test_cudnn_equals_xla_in_bfloat16(packed):
  """Outputs and gradients on a GPU: packed rows give cuDNN the dense mask (as its bias),
  rows of one example their lengths; XLA's kernel takes the dense mask of the same rows.
  """
  ids = _segment_ids() if packed else _padded_segment_ids()
  qkv = _qkv(jnp.bfloat16, heads=4)
  real = jnp.asarray(ids > 0)[..., None, None]
  weights = jnp.asarray(np.random.default_rng(1).normal(size=qkv[0].shape), jnp.float32) * real

  def outputs_and_grads(implementation, mask):
    def loss(*qkv):
      out = attention.attend(*qkv, mask, implementation=implementation)
      return jnp.sum(out.astype(jnp.float32) * weights)

    out = _attend(implementation, mask, *qkv)
    return out, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*qkv)

  cudnn, cudnn_grads = outputs_and_grads(
    "cudnn", attention.AttentionMask(jnp.asarray(ids), packed=packed)
  )
  xla, xla_grads = outputs_and_grads("xla", attention.AttentionMask(jnp.asarray(ids)))
  assert cudnn.dtype == jnp.bfloat16
  # bf16 keeps 8 significant bits: outputs (|x| < ~3) agree to a few of its ulps.
  _assert_real_positions_close(cudnn, xla, ids, rtol=2e-2, atol=2e-2)
  for name, got, want in zip("qkv", cudnn_grads, xla_grads):
    # Padding positions get no gradient from the weighted loss under either kernel.
    np.testing.assert_allclose(
      np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=5e-2, atol=5e-2, err_msg=name
    )


BF16 = jnp.bfloat16


@pytest.mark.parametrize(
  "implementation, platform, length, dropout, dtype, head_dim, kernel",
  [
    (None, "tpu", 512, False, BF16, 64, "splash"),
    (None, "tpu", 384, False, BF16, 64, "splash"),  # 128-blocks
    (None, "tpu", 100, False, BF16, 64, "xla"),  # splash's blocks do not fit: silently XLA
    (None, "tpu", 512, True, BF16, 64, "einsum"),  # no fused kernel has attention dropout
    (None, "gpu", 512, False, BF16, 64, "cudnn"),
    (None, "gpu", 128, False, jnp.float16, 128, "cudnn"),
    (None, "gpu", 512, False, jnp.float32, 64, "xla"),  # cuDNN's flash kernels: half only
    (None, "gpu", 512, False, BF16, 160, "xla"),  # a head size cuDNN does not take
    (None, "gpu", 101, False, BF16, 64, "xla"),  # an odd length
    (None, "gpu", 512, True, BF16, 64, "einsum"),
    (None, "cpu", 512, False, BF16, 64, "xla"),
    ("cudnn", "gpu", 512, False, BF16, 64, "cudnn"),
    ("cudnn", "gpu", 512, True, BF16, 64, "einsum"),
    ("xla", "gpu", 512, False, BF16, 64, "xla"),
    ("xla", "tpu", 512, False, BF16, 64, "xla"),
    ("splash", "cpu", 256, False, jnp.float32, 64, "splash"),  # interpret mode, for tests
    ("splash", "tpu", 512, True, BF16, 64, "einsum"),
  ],
)
def test_the_kernel_chosen_per_platform(
  implementation, platform, length, dropout, dtype, head_dim, kernel
):
  assert attention.choose(implementation, platform, length, dropout, dtype, head_dim) == kernel


@pytest.mark.parametrize(
  "dtype, head_dim, length", [(jnp.float32, 64, 128), (BF16, 12, 128), (BF16, 64, 127)]
)
def test_cudnn_for_inputs_it_does_not_take_is_one_error_line(dtype, head_dim, length):
  with pytest.raises(UserError, match="attention_impl='cudnn' takes bfloat16 or float16") as e:
    attention.choose("cudnn", "gpu", length, False, dtype, head_dim)
  message = str(e.value)
  assert "\n" not in message and f"head size {head_dim}, length {length}" in message


def _lower_for_cuda(monkeypatch, function, *args):
  """StableHLO of `function` lowered for CUDA on this CPU host: the model code sees a GPU
  (`target_platform`) and JAX's cuDNN attention rules a Hopper GPU with cuDNN 9.10 (they
  ask the local GPU otherwise). What a GPU would run, short of compiling it.
  """
  fused = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
  if not hasattr(fused, "cuda_versions") or not hasattr(fused, "check_compute_capability"):
    pytest.skip("this JAX's cuDNN attention module has moved")
  monkeypatch.setattr(
    fused, "cuda_versions", types.SimpleNamespace(cudnn_get_version=lambda: 91000)
  )
  monkeypatch.setattr(fused, "check_compute_capability", lambda capability: True)
  monkeypatch.setattr(attention, "target_platform", lambda: "gpu")
  return jax.jit(function).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.parametrize(
  "dtype, attention_dropout, packed_rows, forward, backward, masks",
  [
    # One forward and one backward kernel per layer; packed rows give the mask as a bias.
    (
      "bfloat16",
      0.0,
      True,
      ["ScaleBiasSoftmax"] * 2,
      ["ScaleBiasSoftmaxBackward"] * 2,
      {"NO_MASK"},
    ),
    # Rows of one example: their lengths (cuDNN's padding mask), no bias.
    ("bfloat16", 0.0, False, ["Softmax"] * 2, ["SoftmaxBackward"] * 2, {"PADDING"}),
    ("float32", 0.0, False, [], [], set()),  # XLA's attention
    ("bfloat16", 0.1, False, [], [], set()),  # dropout on the probabilities: the einsum path
  ],
)
def test_the_gpu_default_trains_a_bert_on_cudnn_flash_attention(
  monkeypatch, dtype, attention_dropout, packed_rows, forward, backward, masks
):
  """The gradients of a 2-layer BERT, lowered for a GPU with the default kernel: cuDNN's
  fused attention forward and backward custom calls, one per layer.
  """
  fields = {"attention_dropout": attention_dropout, "dtype": dtype, "packed_rows": packed_rows}
  model = _tiny_model(bert.BertConfig, None, fields)
  ids = jnp.asarray(_segment_ids() if packed_rows else _padded_segment_ids())
  input_ids = jnp.where(ids > 0, 7, 0)
  params = jax.eval_shape(model.init, jax.random.key(0), input_ids, None, ids)

  def loss(params, input_ids, ids, rng):
    hidden = model.apply(params, input_ids, None, ids, deterministic=False, rngs={"dropout": rng})[
      0
    ]
    return jnp.sum(hidden.astype(jnp.float32) ** 2)

  text = _lower_for_cuda(monkeypatch, jax.grad(loss), params, input_ids, ids, jax.random.key(1))
  calls = re.findall(r'(?:custom_call @|call_target_name = ")__cudnn\$fmha(\w*)', text)
  assert sorted(c for c in calls if not c.endswith("Backward")) == forward, calls
  assert sorted(c for c in calls if c.endswith("Backward")) == backward, calls
  assert set(re.findall(r"\\22mask_type\\22: \\22(\w+)", text)) == masks


def _padded_segment_ids():
  """(4, LENGTH) rows of one example each, then padding (one row full)."""
  lengths = np.array([77, 1, LENGTH, 40])
  return (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int32)


def test_rows_of_one_example_take_their_lengths_and_equal_the_dense_mask():
  """`packed=False` hands XLA's kernel (as cuDNN's) the row lengths instead of the dense
  mask: the same outputs at every position, padding queries included (they attend to the
  real keys under both), and the same gradients.
  """
  ids = jnp.asarray(_padded_segment_ids())
  qkv = _qkv(seed=4)
  dense = attention.AttentionMask(ids)
  lengths = attention.AttentionMask(ids, packed=False)
  np.testing.assert_array_equal(lengths.lengths(), [77, 1, LENGTH, 40])
  np.testing.assert_allclose(
    _attend("xla", lengths, *qkv), _attend("xla", dense, *qkv), rtol=1e-5, atol=1e-6
  )

  def grads(mask):
    def loss(q, k, v):
      return jnp.sum(jnp.sin(attention.attend(q, k, v, mask, implementation="xla")))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*qkv)

  for a, b in zip(grads(lengths), grads(dense)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dropout", [False, True])
def test_splash_for_a_length_its_blocks_do_not_fit_is_one_error_line(dropout):
  with pytest.raises(UserError, match="multiple of 128 \\(got 100\\)") as e:
    attention.choose("splash", "tpu", 100, dropout)
  assert "\n" not in str(e.value) and "attention_impl=None" in str(e.value)


def test_an_unknown_kernel_is_one_error_line():
  with pytest.raises(UserError, match="attention_impl='flash' is not one of") as e:
    attention.choose("flash", "gpu", 512, False)
  assert "\n" not in str(e.value)


# Lowers splash for a real TPU (Mosaic, not interpret mode) with libtpu's compile-only
# devices: forward and backward, BERT-base's head size of 64, full and windowed rows. The
# default kernel is picked for the mesh's devices (TPU), not for this CPU host, as `bert-jax
# compile` needs; the Mosaic kernel shows as a tpu_custom_call.
TPU_LOWERING = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from bert_jax import aot
from bert_jax.model import attention
_, devices = aot.topology_devices("v5e:1x1")
mesh = jax.sharding.Mesh(np.array(devices), ("d",))
replicated = NamedSharding(mesh, PartitionSpec())
print(attention.target_platform())
for length, window in ((256, None), (256, 64)):
  qkv = jax.ShapeDtypeStruct((2, length, 4, 64), jnp.bfloat16, sharding=replicated)
  ids = jax.ShapeDtypeStruct((2, length), jnp.int32, sharding=replicated)
  def loss(q, k, v, ids):
    out = attention.attend(q, k, v, attention.AttentionMask(ids, window))
    return out.astype(jnp.float32).sum()
  with jax.set_mesh(mesh):
    print(attention.target_platform())
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(qkv, qkv, qkv, ids)
    assert "tpu_custom_call" in lowered.as_text()
    lowered.compile()
  print("compiled", length, window)
"""


def test_splash_compiles_for_a_tpu():
  pytest.importorskip("libtpu")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  proc = subprocess.run(
    [sys.executable, "-c", TPU_LOWERING],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == (
    ["cpu", "tpu", "compiled", "256", "None", "tpu", "compiled", "256", "64"]
  )
