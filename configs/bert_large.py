"""BERT-large (L24/H1024, 340M parameters) as in Devlin et al. (2018), in two phases.

    bert-jax pretrain --config configs/bert_large.py:phase1 --workdir runs/large128
    bert-jax pretrain --config configs/bert_large.py:phase2 --workdir runs/large512 \
        --config.init_from=runs/large128

Same data and optimizer settings as configs/bert_base.py; layers are rematerialised
(`dots_no_batch`: keep matmul outputs, recompute the rest) to fit batch 256 at length 512.
Expected on Wikipedia + books: masked-LM accuracy about 0.73 at the end of phase 2
(published reproductions). Not yet run by us at this scale.

Compiled for TPU v5e on a CPU (`bert-jax compile --config configs/bert_large.py:PHASE
--topology v5e:2x4`; libtpu 0.0.52), the smallest v5e slices that hold them:
phase 1 on v5e:2x2 (4 chips): peak 5.5 of 15.75 usable GiB per chip (16 GiB HBM);
phase 2 on v5e:2x4 (8 chips): peak 10.1 of 15.75 GiB per chip (v5e:2x2 needs 18.7 GiB).
One chip, phase 2 at batch 32 (`--topology v5p:1x1x1 --config.train.batch_size=32
--config.data.lanes=32 --config.mesh.fsdp=1`): peak 14.9 GiB with this remat, 53.8 GiB
with none (`--config.model.remat_policy=none`), both well inside an 80 GB GPU's memory by
XLA's TPU estimate. On one H200 (2026-11-30, benchmarks/train_throughput.py, bf16, attention
dropout 0, no remat): length 512, batch 32 peaked at 23.7 GiB, at 385 seq/s.
"""

from bert_jax import config as config_lib


def get_config(phase="phase1"):
  c = config_lib.paper_recipe("large", phase)
  c.model.remat_policy = "dots_no_batch"
  return c
