"""BERT-base (L12/H768, 110M parameters) as in Devlin et al. (2018), in two phases.

    # phase 1: 900k steps at sequence length 128 (90 % of the paper's 1M steps)
    bert-jax pretrain --config configs/bert_base.py:phase1 --workdir runs/base128
    # phase 2: 100k steps at length 512, starting from phase 1's parameters
    bert-jax pretrain --config configs/bert_base.py:phase2 --workdir runs/base512 \
        --config.init_from=runs/base128

Data: `config.data.input` globs of text in the original BERT format (one sentence per
line, a blank line between documents), e.g. Wikipedia + BookCorpus (3.3B words).
Settings (`bert_jax.config.paper_recipe`): batch 256, AdamW lr 1e-4 (b1 0.9, b2 0.999,
eps 1e-6, weight decay 0.01), 10k warmup (phase 2: 1k) then linear decay, dropout 0.1, 15 % masking,
a 30,522-piece vocabulary (a SentencePiece unigram trained on your corpus by default;
BERT's own kind with --config.tokenizer.model_type=wordpiece), bf16 compute with float32
parameters. The attention dropout
keeps attention off the fused kernels (cuDNN, splash: they have none). What dropout costs
on one H200 at length 128, batch 256 (benchmarks/README.md, 2026-11-30): with attention
dropout 0 (cuDNN flash attention) 4,747 seq/s; with no dropout at all 5,135 (+8 %: the
hidden dropout's random bits and masks); the paper's attention dropout not yet measured
with cuDNN as the alternative (on 2026-11-28, against XLA's attention and the `rbg` PRNG,
dropping it was 7 % faster).
Expected on Wikipedia + books: masked-LM accuracy about 0.70 and NSP accuracy about 0.98
at the end of phase 2 (published reproductions; the paper reports only downstream
scores). Not yet run by us at this scale.

Compiled for TPU v5e on a CPU (`bert-jax compile --config configs/bert_base.py:PHASE
--topology v5e:2x2`; libtpu 0.0.52), the smallest v5e slices that hold them:
phase 1 on v5e:2x2 (4 chips): peak 6.7 of 15.75 usable GiB per chip (16 GiB HBM; one
chip needs 26.3 GiB); phase 2 on v5e:4x4 (16 chips): peak 9.4 of 15.75 GiB per chip
(v5e:2x4 needs 18.6 GiB: no remat here, unlike BERT-large).
"""

from bert_jax import config as config_lib


def get_config(phase="phase1"):
  return config_lib.paper_recipe("base", phase)
